package history

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// replyError is an error reply from Redis, as go-redis returns one.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

func TestTransientTellsPassingFailuresFromLastingOnes(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("read history of ws:u1: %w", err) }
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{wrap(redis.ErrPoolTimeout), true},
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), true},
		{wrap(replyError("LOADING Redis is loading the dataset in memory")), true},
		{wrap(replyError("CLUSTERDOWN The cluster is down")), true},
		{wrap(replyError("ERR Error running script: bad key")), false},
		{wrap(errors.New("unexpected ws_history reply string")), false},
		{wrap(redis.ErrClosed), false},
		{wrap(context.DeadlineExceeded), false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
