//go:build linux

package eventloop

import (
	"fmt"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
)

// handoff is a hijacked connection on its way into a shard: an accepted one (Accept writes
// its 101 itself after queueing the adoption, and the loop writes nothing for it until the
// taskSent that follows) or a rejected one (reject: the loop sends response and waits for the
// peer's close).
type handoff struct {
	fd      int
	pending []byte // bytes the client sent behind its handshake
	adm     session.Admission
	sendErr error // the 101 write's error; set before taskSent is submitted
	c       *conn // the adopted connection; loop-owned, for taskSent

	reject   bool
	response []byte // reject: the 101 response, the error frame and the close frame
}

// connTable is a loop's connections by slot: a connection's slot is its index here, its
// wheel id and the Fd of its epoll events.
type connTable struct {
	conns []*conn // by slot; nil when free
	free  []int32 // free slots
	live  int     // connections with an open fd
	held  int     // connections with flagHeld (Accept still writing their 101)
}

// adopt takes a hijacked connection into the shard. An accepted connection is registered at
// once but held: Accept is writing its 101, and whatever is queued for it meanwhile goes out
// behind that, once taskSent arrives. A rejected one gets its response and waits for the
// peer's close.
func (l *loop) adopt(h *handoff) {
	if l.stopping {
		l.refuse(h, message.CloseGoingAway, errStopped)
		return
	}
	slot := l.allocSlot()
	c := &conn{fd: int32(h.fd), slot: slot, qhead: -1, qtail: -1, id: h.adm.Identity}
	c.timer.clear()
	if err := l.register(h.fd, slot); err != nil {
		l.free = append(l.free, slot)
		l.refuse(h, message.CloseInternalError, fmt.Errorf("shard %d: register fd %d: %w", l.id, h.fd, err))
		return
	}
	l.conns[slot] = c
	l.live++
	if h.reject {
		l.push(c, h.response)
		l.awaitPeerClose(c)
		return
	}
	c.flags |= flagRegistered | flagHeld
	l.held++
	h.c = c
	if h.adm.V2() {
		l.adoptV2(c)
	}
	l.reg.Add(c, c.id.User, c.id.Groups)
	l.active.Add(1)
	l.e.metrics.ConnectionsActive.Inc()
	c.seen = l.now
	c.pingAt = l.now + l.pingEvery
	if !h.adm.Expires.IsZero() {
		c.expiry = l.tickOf(h.adm.Expires)
	}
	l.schedule(c)
	if l.drain.begun { // handed over while the drain began: it would never be drained otherwise
		l.startClose(c, message.CloseGoingAway, nil)
		return
	}
	if len(h.pending) > 0 {
		l.consumeInput(c, h.pending)
	}
}

// register adds a connection's descriptor to the shard's epoll set.
func (l *loop) register(fd int, slot int32) error {
	if f := l.e.faults.addConn; f != nil {
		if err := f(fd); err != nil {
			return err
		}
	}
	return l.poll.add(fd, slot)
}

// refuse ends a handoff the loop cannot take and closes its descriptor, which the loop owns
// from the moment the handoff was queued: nobody else closes or writes it. A rejected
// connection still gets what of its response fits without blocking. An accepted connection
// (its client may already have the 101, and Accept has returned) is reported to Hooks.Closed
// with code, so the service releases what it reserved for it: every accepted connection ends
// in exactly one Closed.
func (l *loop) refuse(h *handoff, code uint16, err error) {
	l.load.Add(-1)
	if h.reject {
		l.e.rejectNow(h)
		return
	}
	_ = l.e.closeFD(h.fd)
	l.e.log.Warn("accepted connection dropped before its shard took it", "shard", l.id, "err", err)
	l.e.hooks.Closed(&h.adm.Identity, code)
}

// unhold lets a connection's queue flow once Accept has written its 101: everything queued
// meanwhile (messages, echoes of bytes that followed the handshake) goes out behind it. A
// failed 101 write means the peer is gone.
func (l *loop) unhold(h *handoff) {
	c := h.c
	if c == nil || c.state == stateClosed {
		return
	}
	l.release101(c)
	if h.sendErr != nil {
		l.abort(c)
		return
	}
	l.markDirty(c)
}

// release101 ends c's hold: Accept is done with the 101 (or c is closing without it).
func (l *loop) release101(c *conn) {
	if c.flags&flagHeld != 0 {
		c.flags &^= flagHeld
		l.held--
	}
}

// allocSlot takes a free slot, or grows the table by one.
func (l *loop) allocSlot() int32 {
	if n := len(l.free); n > 0 {
		s := l.free[n-1]
		l.free = l.free[:n-1]
		return s
	}
	l.conns = append(l.conns, nil)
	return int32(len(l.conns) - 1)
}
