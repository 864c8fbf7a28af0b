package gwsengine

import (
	"time"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
)

// What a sweep found a connection due for.
type dutyKind uint8

const (
	dutyPing    dutyKind = iota + 1
	dutySilence          // nothing received for ConnectionTimeout: close 1001
	dutyExpired          // token expired: TOKEN_EXPIRED, close 1008
)

type duty struct {
	c    *conn
	kind dutyKind
}

// tickFor picks how often a shard looks at its connections: often enough that a ping, a
// silence timeout or a token expiry is acted on within a quarter of the shorter period (and
// within a second in production), rarely enough that a sweep over a shard's connections costs
// nothing measurable.
func tickFor(heartbeat, timeout time.Duration) time.Duration {
	t := min(heartbeat, timeout) / 4
	return max(min(t, time.Second), 10*time.Millisecond)
}

// run is the shard's ticker goroutine: one timer per shard instead of one per connection.
func (s *shard) run(e *Engine, stop <-chan struct{}) {
	defer e.wg.Done()
	t := time.NewTicker(e.tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.sweep(e, now.UnixNano())
		}
	}
}

// sweep decides under the lock and acts after releasing it, so socket work never holds up
// Accept, Deliver or a close on the same shard. Nothing it does blocks: pings and closes go to
// the sockets' write queues.
func (s *shard) sweep(e *Engine, now int64) {
	timeout := int64(e.opts.ConnectionTimeout)
	interval := int64(e.opts.HeartbeatInterval)
	due := s.due[:0]
	s.mu.Lock()
	for _, c := range s.reg.All() {
		switch {
		case c.closing():
		case now >= c.expires.Load():
			due = append(due, duty{c, dutyExpired})
		case now-c.wire.lastRead.Load() >= timeout:
			due = append(due, duty{c, dutySilence})
		case now >= c.nextPing:
			c.nextPing = now + interval
			due = append(due, duty{c, dutyPing})
		}
	}
	s.mu.Unlock()
	for i, d := range due {
		switch d.kind {
		case dutyPing:
			d.c.send(gws.OpcodePing, nil)
		case dutySilence:
			d.c.shut(message.CloseGoingAway, nil, false)
		case dutyExpired:
			act := session.Expired()
			d.c.shut(act.Close, act.Reply, false)
		}
		due[i] = duty{}
	}
	s.due = due[:0]
}
