//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // our close frame is queued or sent; waiting for the peer's, or the deadline
	stateClosed            // fd closed; the struct is garbage once the last reference drops
)

// Connection flags.
const (
	flagRegistered    uint16 = 1 << iota // in the shard registry; cleared by release, so Closed runs once
	flagDirty                            // in the loop's dirty list, flushed at the end of this iteration
	flagWritable                         // EPOLLOUT interest registered (a write backlog is waiting)
	flagMidFrame                         // the last write ended inside a frame
	flagDoomed                           // over the send queue limit during a fan-out; closed right after it
	flagFinAfterFlush                    // close the fd as soon as the queue is written
	flagDiscard                          // the parser failed: drop input until the peer goes or the deadline
	flagBroken                           // a write failed during a fan-out; aborted right after it
	flagHalfClose                        // shut the write side down (FIN) as soon as the queue is written
	flagHeld                             // Accept is still writing the 101: queue, but write nothing yet
	flagV2                               // speaks notifications.v2 (v2.go)
	flagResuming                         // v2, resume not done: deliveries are held (loop.resumes)
	flagFloor                            // v2, resume just done: stale deliveries are dropped (loop.resumes)
)

// conn is one WebSocket connection. It is owned by its shard's loop goroutine: every field is
// read and written only there. It is kept small on purpose, because an idle connection is all
// the service holds for most users: no buffer (reads go into the shard's buffer, an incomplete
// frame lives in parser.rx only while incomplete), no goroutine, no runtime timer (the shard's
// wheel holds timer), no channel; the identity's strings are shared with the Admission.
type conn struct {
	fd    int32
	slot  int32 // index in the loop's connection table; the wheel's id for this connection
	state connState
	flags uint16
	timer timerNode
	place int32 // the registry's: index in its list of the shard's connections, plus one
	// An open connection's deadlines, in wheel ticks (timers.go). A closing connection has one
	// deadline, the end of its closing handshake, and its wheel entry is that deadline
	// (awaitPeerClose): a field of its own would take conn past its 128-byte size class.
	seen   uint32 // last inbound bytes
	pingAt uint32 // next heartbeat ping
	expiry uint32 // token expiry; 0: none
	parser parser
	// Outbound queue: frames queued during this loop iteration are linked in the loop's ref
	// arena (qhead..qtail); what a partial write leaves over moves to backlog.
	qhead, qtail int32
	queued       int // bytes queued and not yet written
	backlog      *backlog
	id           session.Identity
	in           session.Inbound // inbound frames and refreshes spent (inbound.go)
}

// backlog holds a connection's unwritten frames while it waits for EPOLLOUT. Frames are shared
// and immutable; the first may be a tail slice of a partly written one.
type backlog struct {
	frames [][]byte
}

// release takes a connection out of the registry and reports it closed with code: the one
// place Hooks.Closed is called, guarded by flagRegistered so it happens exactly once.
func (l *loop) release(c *conn, code uint16) {
	if c.flags&flagRegistered == 0 {
		return
	}
	c.flags &^= flagRegistered
	l.endV2(c)
	l.reg.Remove(c, c.id.User, c.id.Groups)
	l.active.Add(-1)
	l.e.metrics.ConnectionsActive.Dec()
	l.e.hooks.Closed(&c.id, code)
}

// startClose begins a server-initiated close with code: the connection leaves the registry,
// reply (if any) and a close frame are queued, and the fd is closed when the peer answers with
// its close frame or after closeWait.
func (l *loop) startClose(c *conn, code uint16, reply []byte) {
	if c.state != stateOpen {
		return
	}
	l.release(c, code)
	var msg []byte
	if reply != nil {
		msg = encodeFrame(opText, reply)
		l.e.metrics.MessagesSent.Inc()
	}
	l.pushLast(c, msg, encodeClose(code))
	l.awaitPeerClose(c)
}

// fail closes c for a protocol violation (1002), bad UTF-8 (1007), an oversized message
// (1009, after a MESSAGE_TOO_LARGE ErrorMessage) or a frame not completed in time (1001).
//
// The parser's state is no longer trustworthy (after a bad header the frame boundaries are
// unknown; a refused 1009 frame may announce 2^63 bytes), so the client's answering close
// frame cannot be recognised in what follows, and further input is discarded. Instead of
// waiting closeWait for a close frame that would never be seen, the write side is shut down
// as soon as our close frame is written (flagHalfClose): the client gets our close frame and
// then FIN, answers, and closes its end; we read and discard until that EOF and only then
// close the fd, at once. Closing the fd straight away would not do: close(2) with unread input
// pending sends an RST, which can destroy our close frame before the client reads it. A
// client that never closes is still cut off at the closing deadline.
func (l *loop) fail(c *conn, code uint16) {
	var reply []byte
	if code == message.CloseMessageTooBig {
		act := session.TooLarge()
		reply = act.Reply
		l.e.metrics.Dropped(telemetry.DropTooLarge, 1)
	}
	l.startClose(c, code, reply)
	c.flags |= flagDiscard | flagHalfClose
	c.parser.reset()
	l.markDirty(c)
}

// onPeerClose answers the peer's close frame: echo its code (an empty close for none), or
// 1002 when the frame is invalid; then close the fd once the answer is written.
func (l *loop) onPeerClose(c *conn, payload []byte) {
	code, ok := parseCloseBody(payload)
	switch {
	case c.state != stateOpen:
	case !ok:
		l.startClose(c, message.CloseProtocolError, nil)
	default:
		l.release(c, code)
		echo := code
		if code == message.CloseNoStatus {
			echo = 0
		}
		l.pushLast(c, nil, encodeClose(echo))
		l.awaitPeerClose(c)
	}
	c.flags |= flagFinAfterFlush
	l.markDirty(c)
}

// abort ends a connection whose peer vanished (EOF, reset, write error): 1006 if it was open.
func (l *loop) abort(c *conn) {
	l.release(c, message.CloseAbnormal)
	l.finish(c)
}

// finish takes the fd out of the epoll set and closes it: the last step of every path. The
// explicit EPOLL_CTL_DEL matters while Accept has not yet closed its original descriptor of
// the socket (a client that vanished right after its handshake): the registration would
// outlive our close and keep reporting the dead socket under this slot and fd number, which
// the next connection may get both of, so the shard would spin reading it.
func (l *loop) finish(c *conn) {
	if c.state == stateClosed {
		return
	}
	l.release(c, message.CloseAbnormal) // a no-op unless nothing released it yet
	l.release101(c)
	c.state = stateClosed
	l.wheel.cancel(c.slot)
	if err := l.poll.del(int(c.fd)); err != nil {
		l.e.log.Debug("epoll del", "shard", l.id, "fd", c.fd, "err", err)
	}
	if err := l.e.closeFD(int(c.fd)); err != nil {
		l.e.log.Debug("close socket", "shard", l.id, "fd", c.fd, "err", err)
	}
	l.conns[c.slot] = nil
	l.free = append(l.free, c.slot)
	c.parser.reset()
	c.backlog = nil
	c.qhead, c.qtail, c.queued = -1, -1, 0
	l.live--
	l.load.Add(-1)
}
