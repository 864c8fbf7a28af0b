//go:build linux

package eventloop

import (
	"math"
	"time"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// wheelSlots is the size of each shard's timing wheel (a power of two).
const wheelSlots = 4096

// closeWait bounds how long a closing connection waits for the peer's close frame.
const closeWait = time.Second

// timers is a loop's clock and the deadlines it keeps: every connection sits in the wheel
// (wheel.go) at its earliest deadline, so the loop needs one wait deadline, not a runtime
// timer per connection. Periods are in ticks, whole ticks rounded up.
type timers struct {
	wheel     *wheel
	start     time.Time
	tick      time.Duration
	now       uint32 // current tick, from 1
	nanos     int64  // time since start at this loop turn: the inbound limits' clock
	pingEvery uint32 // 0: no heartbeat
	silence   uint32 // 0: no silence timeout
	closeWait uint32 // the closing handshake's
	frameWait uint32 // an incomplete frame's: session.FrameTimeout
	ping      []byte // the heartbeat frame, shared by every connection
}

// ticksFor converts d to whole ticks, rounding up; 0 stays 0.
func ticksFor(d, tick time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min((d+tick-1)/tick, math.MaxUint32/2))
}

// tickOf converts a wall-clock deadline to a tick of this loop (at least 1: 0 means none).
func (l *loop) tickOf(t time.Time) uint32 {
	d := t.Sub(l.start)
	if d <= 0 {
		return 1
	}
	return ticksFor(d, l.tick) + 1
}

// clock advances the loop's notion of now.
func (l *loop) clock() {
	d := time.Since(l.start)
	l.nanos = int64(d)
	l.now = uint32(d/l.tick) + 1
}

// schedule puts an open connection in the wheel slot of its earliest deadline. A closing
// connection is left where awaitPeerClose put it: its one deadline is the end of the closing
// handshake, and its wheel entry is the only place that deadline is kept.
func (l *loop) schedule(c *conn) {
	if c.state != stateOpen {
		return
	}
	at := uint32(math.MaxUint32)
	if l.pingEvery > 0 {
		at = min(at, c.pingAt)
	}
	if l.silence > 0 {
		at = min(at, c.seen+l.silence)
	}
	if c.expiry != 0 {
		at = min(at, c.expiry)
	}
	if v := l.v2of(c); v != nil && v.waitAt != 0 {
		at = min(at, v.waitAt)
	}
	if by := c.parser.deadline(); by != 0 {
		at = min(at, by)
	}
	if at == math.MaxUint32 {
		l.wheel.cancel(c.slot)
		return
	}
	l.wheel.schedule(c.slot, at)
}

// awaitPeerClose moves c to closing, with the closing handshake's deadline as its only wheel
// entry (schedule leaves a closing connection alone): when it fires, c is finished.
func (l *loop) awaitPeerClose(c *conn) {
	c.state = stateClosing
	l.wheel.schedule(c.slot, l.now+l.closeWait)
}

// runTimers handles every connection whose wheel entry is due.
func (l *loop) runTimers() {
	for _, id := range l.wheel.expire(l.now) {
		// An entry scheduled again since expire returned it (a connection that began closing
		// while an earlier one was handled) waits for its new deadline.
		if c := l.conns[id]; c != nil && !c.timer.scheduled() {
			l.onTimer(c)
		}
	}
}

// onTimer handles whichever of c's deadlines passed. Reads do not touch the wheel: a
// connection heard from since it was scheduled just finds its silence deadline moved and is
// rescheduled.
func (l *loop) onTimer(c *conn) {
	now := l.now
	if c.state == stateClosing {
		l.finish(c) // its closing handshake's deadline: the wheel holds nothing else for it
		return
	}
	if c.state != stateOpen {
		return
	}
	if c.expiry != 0 && now >= c.expiry {
		act := session.Expired()
		l.startClose(c, act.Close, act.Reply)
		return
	}
	if by := c.parser.deadline(); by != 0 && now >= by {
		l.e.metrics.Dropped(telemetry.DropIncompleteFrame, 1)
		l.fail(c, message.CloseGoingAway)
		return
	}
	if l.silence > 0 && now >= c.seen+l.silence {
		l.startClose(c, message.CloseGoingAway, nil)
		return
	}
	if v := l.v2of(c); v != nil && v.waitAt != 0 && now >= v.waitAt {
		l.startResume(c, nil) // no resume frame in time: an empty one
	}
	if l.pingEvery > 0 && now >= c.pingAt {
		c.pingAt = now + l.pingEvery
		if l.send(c, l.ping); c.state != stateOpen {
			return // over the limit: closing, on the closing deadline
		}
	}
	l.schedule(c)
}
