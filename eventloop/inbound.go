//go:build linux

package eventloop

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// What a client sends: read into the shard's one buffer, parsed (parser.go), and answered. The
// loop is the parser's frameHandler; each callback is given the connection the bytes came from.

// onReadable reads once into the shard's buffer (level-triggered: if more is waiting, the
// next wait reports it again, after every other ready connection had its turn).
func (l *loop) onReadable(c *conn) {
	n, err := unix.Read(int(c.fd), l.buf)
	if n > 0 {
		l.consumeInput(c, l.buf[:n])
		return
	}
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return
	}
	l.abort(c) // EOF or an error: the peer is gone
}

// consumeInput parses bytes read from c (or buffered behind its handshake).
func (l *loop) consumeInput(c *conn, data []byte) {
	if c.flags&flagDiscard != 0 {
		return
	}
	c.seen = l.now
	if code := c.parser.feed(data, l.maxMsg, l, c); code != 0 {
		l.fail(c, code)
		return
	}
	if c.state != stateOpen {
		return // closing: the closing deadline bounds it, and the wheel holds that one
	}
	moved := false
	if c.parser.begun() { // a new incomplete frame: its deadline starts now and only now
		c.parser.setDeadline(l.now + l.frameWait)
		moved = true
	}
	if n, ok := c.parser.announced(l.maxMsg); ok { // its header is in: the time its length allows
		c.parser.setDeadline(c.parser.deadline() + ticksFor(session.FrameTime(n), l.tick))
		moved = true
	}
	if moved {
		l.schedule(c)
	}
}

// onFrame counts one inbound frame against c's rate, on the clock of this loop turn. Over the
// rate c is closed RATE_LIMITED + 1008; parsing goes on, so the peer's close frame is still
// recognised, but nothing else it sent is answered.
func (l *loop) onFrame(c *conn) {
	if c.state != stateOpen || c.in.Frames.Take(l.frameRate, l.nanos, 1) {
		return
	}
	l.e.metrics.Dropped(telemetry.DropRateLimited, 1)
	act := session.RateLimited()
	l.startClose(c, act.Close, act.Reply)
}

// onMessage answers a whole client message: binary is echoed, text goes to the policy.
func (l *loop) onMessage(c *conn, op byte, payload []byte) bool {
	if c.state != stateOpen {
		return true // closing: only the peer's close frame matters now
	}
	l.e.metrics.MessagesReceived.Inc()
	if op == opBinary {
		l.reply(c, encodeFrame(opBinary, payload))
		return c.state == stateOpen
	}
	if l.onResumeFrame(c, payload) {
		return c.state == stateOpen
	}
	act := l.e.opts.Policy.OnText(&c.id, &c.in, l.nanos, payload)
	if !act.Expires.IsZero() {
		c.expiry = l.tickOf(act.Expires)
		l.schedule(c)
	}
	if act.Close != 0 {
		l.startClose(c, act.Close, act.Reply)
		return false
	}
	if act.Refresh {
		l.refresh(c, act)
		return c.state == stateOpen
	}
	if reply := v2Reply(c, &act, payload); reply != nil {
		l.reply(c, encodeFrame(opText, reply))
	}
	return c.state == stateOpen
}

// reply queues a message for c under the send queue limit.
func (l *loop) reply(c *conn, frame []byte) {
	l.e.metrics.MessagesSent.Inc()
	l.send(c, frame)
}

// onControl answers a ping with a pong and a close frame with the closing handshake; a pong
// needs nothing (any input already counts as a sign of life).
func (l *loop) onControl(c *conn, op byte, payload []byte) bool {
	switch op {
	case opPing:
		if c.state == stateOpen {
			// Under the limit like any frame: a client that pings and never reads is closed
			// 1013 once its pongs pass it, instead of growing the server without end.
			l.send(c, encodeFrame(opPong, payload))
			return c.state != stateClosed // send may have found the socket broken
		}
	case opClose:
		l.onPeerClose(c, payload)
		return false
	}
	return true
}
