//go:build linux

package eventloop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
)

func TestConsumeOfAnEmptyWriteKeepsTheMidFrameMark(t *testing.T) {
	l := benchLoop(t)
	c := l.addTestConn(-1, "u", nil)
	frame := encodeFrame(opText, bytes.Repeat([]byte("x"), 300))
	c.backlog = &backlog{frames: [][]byte{frame[100:]}}
	c.queued = len(frame) - 100
	c.flags |= flagMidFrame
	l.consume(c, 0) // what flush does after a writev that returned EAGAIN
	if c.flags&flagMidFrame == 0 {
		t.Fatal("consume(c, 0) forgot that the socket holds half a frame")
	}
	if c.queued != len(frame)-100 || len(c.backlog.frames) != 1 {
		t.Fatalf("queued %d, backlog %d frames", c.queued, len(c.backlog.frames))
	}
}

// A fan-out leaves a frame half written, the next write finds the socket full (EAGAIN), and
// the connection goes over the send queue limit: when its peer reads at last it must get the
// rest of that frame, then the SLOW_CONSUMER ErrorMessage and close 1013 as whole frames.
func TestSlowConsumerCloseNeverCutsAFrame(t *testing.T) {
	l := benchLoop(t)
	l.sendLimit = 64 << 10
	c, peer := l.socketConn(t, "slow")
	payload := bytes.Repeat([]byte("x"), 9999) // no multiple of any buffer size
	batch := []registry.Delivery{{Target: registry.Target{Kind: registry.Broadcast}, Payload: payload}}
	for i := 0; c.state == stateOpen; i++ {
		if i == 1000 {
			t.Fatal("never closed for being slow")
		}
		l.deliver(batch)
		l.flushDirty()
	}
	// The peer reads at last; the loop writes whenever the socket has room again.
	var got []byte
	inSocket := 0 // what the socket held when the connection was closed
	buf := make([]byte, 64<<10)
	for i := 0; ; i++ {
		if i == 1 {
			inSocket = len(got)
		}
		for {
			n, err := unix.Read(peer, buf)
			if n <= 0 {
				if !errors.Is(err, unix.EAGAIN) {
					t.Fatalf("read: %v", err)
				}
				break
			}
			got = append(got, buf[:n]...)
		}
		if c.queued == 0 && i > 0 {
			break
		}
		if i == 1000 {
			t.Fatalf("%d bytes still queued", c.queued)
		}
		l.markDirty(c)
		l.flushDirty()
	}
	var ops []byte
	for len(got) > 0 {
		fin, op, body, rest, ok := splitServerFrame(got)
		if !ok || !fin {
			t.Fatalf("after frames %v: %d bytes that are no whole final frame", ops, len(got))
		}
		got = rest
		ops = append(ops, op)
		switch {
		case op == opText && bytes.Equal(body, payload):
		case op == opText && bytes.Equal(body, message.ErrorJSON(message.CodeSlowConsumer)):
		case op == opClose && len(body) == 2 && binary.BigEndian.Uint16(body) == message.CloseTryAgainLater:
		default:
			t.Fatalf("after frames %v: a cut or garbled frame (op %#x, %d bytes: %.40q)", ops[:len(ops)-1], op, len(body), body)
		}
	}
	n := len(ops)
	if n < 2 || ops[n-1] != opClose || ops[n-2] != opText {
		t.Fatalf("frames %v: want the ErrorMessage then close 1013 last", ops)
	}
	if inSocket%frameSize(len(payload)) == 0 {
		t.Fatalf("the socket held %d bytes, whole frames: the test no longer covers a half-written frame", inSocket)
	}
}

// splitServerFrame cuts one unmasked server frame off the front of b.
func splitServerFrame(b []byte) (fin bool, op byte, payload, rest []byte, ok bool) {
	if len(b) < 2 || b[1]&0x80 != 0 {
		return
	}
	n, h := uint64(b[1]&0x7F), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return
		}
		n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return
		}
		n, h = binary.BigEndian.Uint64(b[2:]), 10
	}
	if uint64(len(b)-h) < n {
		return
	}
	end := h + int(n)
	return b[0]&0x80 != 0, b[0] & 0x0F, b[h:end], b[end:], true
}

// The send queue limit bounds what waits behind the frame being written, not one message: a
// frame larger than the limit goes to a connection whose socket cannot take it at once, what
// follows queues normally, and only a backlog over the limit behind it dooms the connection.
func TestFrameLargerThanTheLimitIsWrittenAndWhatFollowsQueues(t *testing.T) {
	l := benchLoop(t)
	l.sendLimit = 64 << 10
	c, _ := l.socketConn(t, "reader")
	deliver := func(payload []byte) {
		l.deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.Broadcast}, Payload: payload}})
		l.flushDirty()
	}
	deliver(bytes.Repeat([]byte("B"), 4*l.sendLimit))
	deliver([]byte("small, right behind"))
	if c.state != stateOpen {
		t.Fatal("closed for a message larger than the limit and one small message behind it")
	}
	for i := 0; c.state == stateOpen; i++ {
		if i == 1000 {
			t.Fatalf("never closed although %d bytes wait behind the large frame", l.waiting(c))
		}
		deliver(bytes.Repeat([]byte("s"), 1000))
	}
	if got := droppedSlow(l); got < 1 {
		t.Fatalf("closed without a slow-consumer drop (%d)", got)
	}
}

// droppedSlow reads websocket_messages_dropped_total{reason="slow_consumer"} of l's engine.
func droppedSlow(l *loop) int {
	var b bytes.Buffer
	l.e.metrics.WritePrometheus(&b)
	for line := range strings.SplitSeq(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, `websocket_messages_dropped_total{reason="slow_consumer"} `); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

// Heartbeat pings and the last frames of a close count against the limit like any frame: a
// ping that does not fit closes the connection 1013, and a close (here for an expired token)
// on a full queue drops the queue rather than holding more than the limit.
func TestHeartbeatPingsAndClosesStayWithinTheLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		due  func(l *loop, c *conn)
		code uint16
	}{
		{"heartbeat ping", func(l *loop, c *conn) { l.pingEvery, c.pingAt = 1, l.now }, message.CloseTryAgainLater},
		{"token expiry", func(l *loop, c *conn) { c.expiry = l.now }, message.ClosePolicyViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := benchLoop(t)
			l.sendLimit = 4096
			c, _ := l.socketConn(t, "full")
			batch := func(p []byte) []registry.Delivery {
				return []registry.Delivery{{Target: registry.Target{Kind: registry.Broadcast}, Payload: p}}
			}
			l.deliver(batch(bytes.Repeat([]byte("B"), 64<<10))) // fills the socket; its rest is the head
			l.flushDirty()
			empty := frameSize(0) + frameOverhead // what an empty frame, or a ping, costs
			for l.waiting(c)+empty <= l.sendLimit {
				l.deliver(batch(nil))
				l.flushDirty()
			}
			if c.state != stateOpen {
				t.Fatal("closed while within the limit")
			}
			tc.due(l, c)
			l.onTimer(c)
			if c.state != stateClosing {
				t.Fatalf("state %d, want closing", c.state)
			}
			if got := binary.BigEndian.Uint16(l.lastFrame(c)[2:]); got != tc.code {
				t.Fatalf("last frame queued closes with %d, want %d", got, tc.code)
			}
			if l.waiting(c) > l.sendLimit {
				t.Fatalf("%d bytes wait behind the frame being written, over the limit of %d", l.waiting(c), l.sendLimit)
			}
		})
	}
}

// lastFrame is the last frame queued for c.
func (l *loop) lastFrame(c *conn) []byte {
	if c.qtail >= 0 {
		return l.refs[c.qtail].frame
	}
	return c.backlog.frames[len(c.backlog.frames)-1]
}

// socketConn adds a connection on one end of a socket pair whose send buffer is the kernel's
// minimum, registered with the loop's poller; the other end (returned) is read by nobody
// unless the test does. Both ends are closed when the test ends.
func (l *loop) socketConn(t *testing.T, user string) (*conn, int) {
	t.Helper()
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sv[1]) })
	_ = unix.SetsockoptInt(sv[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) // the kernel's minimum
	c := l.addTestConn(sv[0], user, nil)
	if err := l.poll.add(sv[0], c.slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.finish(c) })
	return c, sv[1]
}
