package backplane

import (
	"errors"
	"time"
)

// How the Redis backplane follows its relays' reports (relayEvents) and keeps
// backplane_connected and the outage metrics current.

// updateConnected brings backplane_connected and the outage metrics up to date. Ready is read
// under the clock's lock so that concurrent reports apply in the order they observed.
func (r *Redis) updateConnected() {
	r.clock.mu.Lock()
	defer r.clock.mu.Unlock()
	err := r.Ready()
	if errors.Is(err, ErrClosed) {
		return // Close settles the metrics itself
	}
	r.clock.updateLocked(r.m, err == nil, time.Now())
}

// connected, disconnected, slotMoved and received are the relays' reports (relayEvents).

func (r *Redis) connected(rl *relay, reconnect bool) {
	if reconnect {
		r.requestInstall() // Redis may have restarted without its functions
		r.m.BackplaneReconnects.Inc()
		rl.log.Info("backplane: pubsub connection restored")
	} else {
		rl.log.Debug("backplane: pubsub connection up")
	}
	r.updateConnected()
}

func (r *Redis) disconnected(rl *relay, err error) {
	if errors.Is(err, errStopped) {
		return // Close, or a master that left the cluster: nothing to reconnect
	}
	rl.log.Warn("backplane: pubsub connection down, reconnecting with backoff", "err", err)
	r.updateConnected()
	r.reloadTopology()
}

func (r *Redis) slotMoved(rl *relay) {
	rl.log.Debug("backplane: redis dropped a sharded subscription (slot moved), reloading the topology")
	r.reloadTopology()
}

// reloadTopology asks the topology loop of a cluster for a reload.
func (r *Redis) reloadTopology() {
	if r.opts.Cluster {
		select {
		case r.refresh <- struct{}{}:
		default:
		}
	}
}

func (r *Redis) received(n int) { r.m.BackplaneReceived.Add(n) }
