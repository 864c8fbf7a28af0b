package backplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// When a relay's channels count as live (a message published now is delivered) and how long
// its connection may stay silent: the relay never reports a subscription it cannot confirm.

// stallTolerance is how long a Pub/Sub connection may stay silent, although it is pinged every
// pingInterval, before it is presumed dead and replaced; writes to it are bounded alike.
//
// Silence alone proves little: an idle Pub/Sub connection is normal, and a Redis that is
// merely stalled still holds our subscriptions and will deliver everything published
// meanwhile (a publisher's command waits in its socket until Redis resumes). Replacing the
// connection is what loses messages: those Redis executes between noticing our close and
// our resubscription are dropped. So the tolerance is set well above the stalls a healthy
// Redis has: fork of a large dataset for BGSAVE/AOF rewrite copies page tables at up to
// ~0.25 s per GB on some virtualised hosts (seconds for a large instance), an fsync on a
// saturated disk, a CPU-throttled container. It matches Redis Cluster's default
// cluster-node-timeout (15 s), after which the cluster itself fails the node over, and stays
// below Sentinel's default down-after-milliseconds (30 s); a dead host is noticed in this time
// (or at once, when the peer resets the connection). The deadline is armed right before each
// read of the socket, after the batch read so far has been handed to the sink, so a reader
// held up by its own sink (back-pressure from the engine) is never taken for a silent Redis.
const stallTolerance = 15 * time.Second

// silenceLimit is how long the reader may wait for a connection pinged every pingInterval
// before the connection counts as silent: Redis may be stalled or dead, so what the
// connection holds cannot be confirmed to new callers of awaitLive until it answers again
// (the connection is kept meanwhile, see stallTolerance). Only time spent in a socket read
// counts, never time the reader spends handing messages to the sink.
const silenceLimit = 2*pingInterval + pingInterval/2

// errRetired: the channels may have moved to other relays (a cluster topology rebuild), or
// the relay stopped: the caller routes them again.
var errRetired = errors.New("channels moved to other pubsub connections")

// awaitLive returns nil once every channel of chans is live: subscribed on the current
// connection and confirmed by Redis, so a message published from now on is delivered, and
// the connection not silent (see silenceLimit). It never reports success otherwise: while
// the relay is disconnected or silent it waits for Redis to confirm them, until ctx ends (an
// error naming why the relay is down). It returns errRetired when moved is closed (the owner
// rerouted channels) or the relay stops.
func (r *relay) awaitLive(ctx context.Context, chans []string, moved <-chan struct{}) error {
	for {
		select {
		case <-moved:
			return errRetired
		default:
		}
		r.mu.Lock()
		silent := r.silent() // nothing can be confirmed: it waits for Redis to answer
		pending := silent
		for _, ch := range chans {
			if st, _ := r.chans.Get(ch); st == nil || !st.want || !st.live() {
				pending = true
				break
			}
		}
		changed, down := r.changed, r.err
		r.mu.Unlock()
		if !pending {
			return nil
		}
		select {
		case <-changed:
		case <-moved:
			return errRetired
		case <-r.done:
			return errRetired
		case <-ctx.Done():
			switch {
			case down != nil:
				return fmt.Errorf("wait for subscription on %s (down: %v): %w", r.addr, down, ctx.Err())
			case silent:
				return fmt.Errorf("wait for subscription on %s (no answer to pings): %w", r.addr, ctx.Err())
			}
			return fmt.Errorf("wait for subscription on %s: %w", r.addr, ctx.Err())
		}
	}
}

// watchedConn records how long the reader waits in each socket read (relay.reading).
type watchedConn struct {
	net.Conn
	r *relay
}

func (w watchedConn) Read(p []byte) (int, error) {
	start := time.Since(w.r.epoch)
	w.r.reading.Store(int64(start) + 1)
	n, err := w.Conn.Read(p)
	w.r.reading.Store(0)
	if time.Since(w.r.epoch)-start >= silenceLimit {
		// Redis answers after a silence that held awaitLive callers back.
		w.r.mu.Lock()
		w.r.notifyLocked()
		w.r.mu.Unlock()
	}
	return n, err
}

// silent reports whether the reader has waited silenceLimit or longer in its current read.
func (r *relay) silent() bool {
	since := r.reading.Load()
	return since != 0 && time.Since(r.epoch)-time.Duration(since-1) >= silenceLimit
}
