package backplane

import (
	"context"
	"time"

	"github.com/huleedu/websocket-service/history"
)

// loadTimeout bounds one installation of the function library.
const loadTimeout = 10 * time.Second

// PublishSequenced appends payload to channel's history and publishes it through Redis in
// one atomic step, and returns its position (see Publisher.PublishSequenced).
func (r *Redis) PublishSequenced(ctx context.Context, channel string, payload []byte, traceparent string) (history.Position, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return history.Position{}, ErrClosed
	}
	return r.pub.PublishSequenced(ctx, channel, payload, traceparent)
}

// History reads the streams' history in Redis.
func (r *Redis) History() history.Reader { return r.pub.History() }

// installLibrary loads the history's function library (on every primary of a cluster) as soon
// as Redis answers, and again whenever asked: after an outage (Redis may have restarted
// without persistence) and when the cluster's primaries change. So backends calling FCALL
// find it without waiting for this node to publish; this node's own calls also load it
// themselves when Redis answers that it is missing.
func (r *Redis) installLibrary(ctx context.Context) {
	b := newBackoff(100*time.Millisecond, 5*time.Second)
	failing := false
	for {
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		replaced, err := r.pub.History().Load(lctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !failing {
				r.log.Warn("backplane: cannot install the history functions in redis, retrying", "err", err)
			}
			failing = true
			if !b.sleep(ctx) {
				return
			}
			continue
		}
		if len(replaced) > 0 {
			r.log.Warn("backplane: replaced history functions loaded with other settings; every node must run with the same HISTORY_SIZE and HISTORY_TTL",
				"redis", replaced)
		}
		if failing {
			r.log.Info("backplane: history functions installed in redis")
		}
		failing = false
		b.reset()
		select {
		case <-ctx.Done():
			return
		case <-r.reinstall:
		}
	}
}

// requestInstall asks installLibrary to load the library again.
func (r *Redis) requestInstall() {
	select {
	case r.reinstall <- struct{}{}:
	default:
	}
}
