package backplane

import (
	"sync"
	"time"

	"github.com/huleedu/websocket-service/telemetry"
)

// outageClock turns the Redis backplane's readiness, sampled at every change and at least
// every pingInterval, into backplane_connected and the outage metrics: how long the current
// outage has lasted (its start) and how long all outages since start have lasted in total.
// An outage is any time the backplane is not ready: a Pub/Sub connection down, or Redis not
// answering PING (a stall). Its owner holds mu around every call.
type outageClock struct {
	mu      sync.Mutex
	since   time.Time // start of the current outage; zero while connected
	counted time.Time // the current outage is in the total up to here
}

// updateLocked records the state observed at now.
func (c *outageClock) updateLocked(m *telemetry.Metrics, connected bool, now time.Time) {
	if connected {
		if !c.since.IsZero() {
			m.BackplaneDisconnectedSeconds.Add(now.Sub(c.counted).Seconds())
			c.since, c.counted = time.Time{}, time.Time{}
			m.BackplaneDisconnectedSince.Set(0)
		}
		m.BackplaneConnected.Set(1)
		return
	}
	m.BackplaneConnected.Set(0)
	if c.since.IsZero() {
		c.since, c.counted = now, now
		m.BackplaneDisconnectedSince.Set(float64(now.UnixNano()) / 1e9)
		return
	}
	m.BackplaneDisconnectedSeconds.Add(now.Sub(c.counted).Seconds())
	c.counted = now
}

// stop settles the metrics of a closed backplane: not connected, and no outage in progress
// (a closed backplane is not out, it is gone).
func (c *outageClock) stop(m *telemetry.Metrics) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.since.IsZero() {
		m.BackplaneDisconnectedSeconds.Add(time.Since(c.counted).Seconds())
		c.since, c.counted = time.Time{}, time.Time{}
	}
	m.BackplaneDisconnectedSince.Set(0)
	m.BackplaneConnected.Set(0)
}
