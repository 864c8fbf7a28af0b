package history

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/redis/go-redis/v9"
)

// transientReplies are the error replies with which Redis says "not now" rather than "no": a
// replica still loading its data, a script running, a cluster between masters.
var transientReplies = []string{"LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "max number of clients"}

// Transient reports whether a failed read may succeed if made again soon: Redis could not be
// reached or did not answer in time, the client's connections were all taken, or Redis said it
// is loading, busy or between masters. An error reply to the read itself, a reply that does not
// parse, a closed client or the caller's own deadline will not change by reading again.
func Transient(err error) bool {
	switch {
	case err == nil, errors.Is(err, redis.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		for _, p := range transientReplies {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true // refused, reset, timed out: the connection, not the read
	}
	return false
}
