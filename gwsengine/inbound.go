package gwsengine

import (
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// countFrames counts n inbound frames, read at now, against c's rate. Over it c is closed
// RATE_LIMITED + 1008, and the read loop answers nothing more (the events skip a closing c).
func (c *conn) countFrames(n int, now int64) {
	if c.closing() || c.in.Frames.Take(c.e.frameRate, now, n) {
		return
	}
	c.e.metrics.Dropped(telemetry.DropRateLimited, 1)
	act := session.RateLimited()
	c.shut(act.Close, act.Reply, false)
}
