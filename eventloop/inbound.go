//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// onFrame counts one inbound frame against the connection's rate, on the clock of this loop
// turn. Over the rate the connection is closed RATE_LIMITED + 1008; parsing goes on, so the
// peer's close frame is still recognised, but nothing else it sent is answered.
func (l *loop) onFrame() {
	c := l.cur
	if c.state != stateOpen || c.in.Frames.Take(l.frameRate, l.nanos, 1) {
		return
	}
	l.e.metrics.Dropped(telemetry.DropRateLimited, 1)
	act := session.RateLimited()
	l.startClose(c, act.Close, act.Reply)
}
