//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// The send queue limit and the slow consumer: what of a connection's queue counts against
// Options.SendQueueLimit, and what happens to a connection that passes it. writev.go only
// queues and writes; every decision to condemn a reader is taken here.

// connLimits are the per-connection limits from Options, the same for every connection.
type connLimits struct {
	sendLimit int // bytes that may wait behind the frame being written (waiting)
	maxMsg    int // the largest message a client may send
	frameRate session.Rate
}

// frameOverhead is what the loop holds for a queued frame besides its bytes: its slice header
// in the backlog (24 bytes, up to twice that while the backlog's array grows) and the rounding
// of a small frame's allocation. It counts against the send queue limit with the bytes, so a
// flood of tiny frames (empty pongs) is bounded by the limit like a few large ones.
const frameOverhead = 64

// enqueue appends frame to c's outbound queue and reports whether c is still within the send
// queue limit.
func (l *loop) enqueue(c *conn, frame []byte) bool {
	l.push(c, frame)
	return l.waiting(c) <= l.sendLimit
}

// waiting is what counts of c's queue against the send queue limit: everything but the frame
// being written (the first queued). The limit bounds what waits behind that frame, not the
// size of one message, so a message larger than the limit still reaches a connection that
// reads it, and what is published right behind it queues normally.
func (l *loop) waiting(c *conn) int {
	head := 0
	if b := c.backlog; b != nil && len(b.frames) > 0 {
		head = len(b.frames[0]) + frameOverhead
	} else if c.qhead >= 0 {
		head = len(l.refs[c.qhead].frame) + frameOverhead
	}
	return c.queued - head
}

// send queues frame for an open connection under the send queue limit, whatever the frame
// (a delivery, an echo, a pong, a heartbeat ping, a reply): past the limit c is written at
// once (non-blocking), so a burst bigger than the limit does not condemn a reader that keeps
// up, and if its socket will not take enough it is doomed (closed 1013 after the fan-out, or
// at once outside one). A connection still held by Accept wrote nothing because it may not
// yet: that is no sign of a slow reader.
func (l *loop) send(c *conn, frame []byte) {
	if l.enqueue(c, frame) {
		return
	}
	l.flush(c)
	if c.state == stateOpen && l.waiting(c) > l.sendLimit && c.flags&flagHeld == 0 {
		l.doom(c)
		if !l.fanout {
			l.reapDoomed()
		}
	}
}

// pushLast queues the last frames c gets (an error reply, if any, and a close frame). They
// are what the client must see, so they go out even past the send queue limit, but never on
// top of a full queue: if they would put c over the limit, the queue is dropped first, as for
// a slow consumer, and the server holds no more for c than the limit allows.
func (l *loop) pushLast(c *conn, reply, closeFrame []byte) {
	if l.waiting(c)+len(reply)+len(closeFrame)+2*frameOverhead > l.sendLimit {
		l.dropQueue(c)
	}
	if reply != nil {
		l.push(c, reply)
	}
	l.push(c, closeFrame)
}

// doom marks c for a close right after the current fan-out (reapDoomed): over the send queue
// limit, or, with flagBroken, a socket that failed.
func (l *loop) doom(c *conn) {
	if c.flags&flagDoomed == 0 {
		c.flags |= flagDoomed
		l.doomed = append(l.doomed, c)
	}
}

// reapDoomed closes, with SLOW_CONSUMER and 1013, every connection a fan-out pushed over the
// send queue limit, and ends those whose socket failed. It runs after the fan-out so the
// registry is not changed under it.
func (l *loop) reapDoomed() {
	for i, c := range l.doomed {
		l.doomed[i] = nil
		c.flags &^= flagDoomed
		if c.flags&flagBroken != 0 {
			l.abort(c)
			continue
		}
		if c.state != stateOpen {
			continue
		}
		l.dropQueue(c)
		act := session.SlowConsumer()
		l.startClose(c, act.Close, act.Reply)
	}
	l.doomed = l.doomed[:0]
}

// dropQueue discards c's queued frames, except the rest of a frame already partly written (the
// stream stays valid for the close frame that follows). It counts the dropped frames.
func (l *loop) dropQueue(c *conn) {
	dropped := 0
	var keep []byte
	if b := c.backlog; b != nil {
		dropped += len(b.frames)
		if c.flags&flagMidFrame != 0 && len(b.frames) > 0 {
			keep = b.frames[0]
			dropped--
		}
	}
	for r := c.qhead; r >= 0; r = l.refs[r].next {
		dropped++
	}
	c.qhead, c.qtail = -1, -1
	c.backlog, c.queued = nil, 0
	if keep != nil {
		c.backlog = &backlog{frames: [][]byte{keep}}
		c.queued = len(keep) + frameOverhead
	}
	l.e.metrics.Dropped(telemetry.DropSlowConsumer, dropped)
}
