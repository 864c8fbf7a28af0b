//go:build linux

package eventloop

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/tracing"
)

// maxIov bounds the frames one writev takes (the kernel's IOV_MAX is 1024).
const maxIov = 1024

// outbound is a loop's write side. Owned by the loop goroutine.
type outbound struct {
	refs   []outRef // the arena: every frame queued during this loop turn
	dirty  []*conn  // connections queued to during this turn, written once each by flushDirty
	iov    []unix.Iovec
	traced []*tracing.Delivery // applied since the last write pass (trace.go)
	// fanout: deliver is iterating registry lists, so no connection may leave them; a
	// connection that must close is doomed instead (doom), and closed after the fan-out.
	fanout bool
	doomed []*conn
}

// outRef is one queued frame in the loop's ref arena: the arena holds every frame queued during
// one loop iteration, linked per connection, and is emptied by the flush at the end of the
// iteration. A fan-out therefore appends one ref per target to a reused slice and allocates
// nothing per connection, and an idle connection holds no queue at all.
type outRef struct {
	frame []byte
	next  int32
}

// push appends frame to c's outbound queue regardless of the limit: the last frames of a
// closing connection (see pushLast), a rejected connection's response.
func (l *loop) push(c *conn, frame []byte) {
	c.queued += len(frame) + frameOverhead
	if b := c.backlog; b != nil {
		b.frames = append(b.frames, frame)
		if c.flags&flagWritable == 0 {
			l.markDirty(c)
		}
		return
	}
	ref := int32(len(l.refs))
	l.refs = append(l.refs, outRef{frame: frame, next: -1})
	if c.qtail >= 0 {
		l.refs[c.qtail].next = ref
	} else {
		c.qhead = ref
	}
	c.qtail = ref
	l.markDirty(c)
}

// markDirty lists c for this turn's write pass (flushDirty), once.
func (l *loop) markDirty(c *conn) {
	if c.flags&flagDirty == 0 {
		c.flags |= flagDirty
		l.dirty = append(l.dirty, c)
	}
}

// arenaKeep is the ref arena capacity a loop always keeps (2 MiB of refs); a larger arena left
// by a burst is released once a flush uses less than a quarter of it.
const arenaKeep = 1 << 16

// flushDirty writes every connection touched in this iteration, once each, and empties the
// ref arena (every chain is then written or moved to its connection's backlog).
func (l *loop) flushDirty() {
	for i, c := range l.dirty {
		l.flush(c)
		l.dirty[i] = nil
	}
	l.dirty = l.dirty[:0]
	if len(l.traced) > 0 {
		l.releaseTraced()
	}
	if used := len(l.refs); cap(l.refs) > arenaKeep && used < cap(l.refs)/4 {
		l.refs = nil
		return
	}
	clear(l.refs)
	l.refs = l.refs[:0]
}

// flush writes c's queue with writev until it is empty or the socket is full; a remainder
// waits for EPOLLOUT.
func (l *loop) flush(c *conn) {
	c.flags &^= flagDirty
	defer func() { c.flags &^= flagDirty }() // a replay chunk queued here is written here (pump)
	if c.state == stateClosed {
		return
	}
	if c.flags&flagHeld != 0 {
		l.spill(c) // the arena is emptied after this iteration; unhold flushes the backlog
		return
	}
	for {
		iov, total := l.gather(c)
		if len(iov) == 0 {
			// Everything is written: a v2 replay under way queues its next chunk.
			if l.pump(c) {
				continue
			}
			break
		}
		n, err := writev(int(c.fd), iov)
		clear(iov) // drop the references to the frames
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			l.broken(c)
			return
		}
		l.consume(c, n)
		if n < total {
			l.spill(c)
			if c.flags&flagWritable == 0 {
				if err := l.poll.watchWritable(int(c.fd), c.slot, true); err != nil {
					l.broken(c)
					return
				}
				c.flags |= flagWritable
			}
			return
		}
	}
	if c.flags&flagWritable != 0 {
		c.flags &^= flagWritable
		if err := l.poll.watchWritable(int(c.fd), c.slot, false); err != nil {
			l.broken(c)
			return
		}
	}
	if c.flags&flagFinAfterFlush != 0 {
		l.finish(c)
		return
	}
	if c.flags&flagHalfClose != 0 {
		// Our close frame is out: FIN after it (see fail). The fd is closed at the peer's EOF.
		c.flags &^= flagHalfClose
		if err := unix.Shutdown(int(c.fd), unix.SHUT_WR); err != nil {
			l.broken(c)
		}
	}
}

// broken ends a connection whose socket failed. During a fan-out the registry is being
// iterated, so the connection is only marked and ended by reapDoomed right after.
func (l *loop) broken(c *conn) {
	if l.fanout {
		c.flags |= flagBroken
		l.doom(c)
		return
	}
	l.abort(c)
}

// gather fills the loop's iovec array from c's backlog then its chain, up to maxIov.
func (l *loop) gather(c *conn) ([]unix.Iovec, int) {
	iov := l.iov[:0]
	total := 0
	add := func(f []byte) bool {
		if len(iov) == maxIov {
			return false
		}
		v := unix.Iovec{Base: &f[0]}
		v.SetLen(len(f))
		iov = append(iov, v)
		total += len(f)
		return true
	}
	if b := c.backlog; b != nil {
		for _, f := range b.frames {
			if !add(f) {
				return iov, total
			}
		}
	}
	for r := c.qhead; r >= 0; r = l.refs[r].next {
		if !add(l.refs[r].frame) {
			break
		}
	}
	return iov, total
}

// consume drops n written bytes from the front of c's queue and records whether the stream
// now ends inside a frame. A write that wrote nothing (EAGAIN) changes nothing: in particular
// it must keep flagMidFrame, or dropQueue would throw away the rest of a frame the peer has
// already partly received and the close frame would land in the middle of it.
func (l *loop) consume(c *conn, n int) {
	if n <= 0 {
		return
	}
	c.queued -= n
	c.flags &^= flagMidFrame
	if b := c.backlog; b != nil {
		for n > 0 && len(b.frames) > 0 {
			if f := b.frames[0]; n < len(f) {
				b.frames[0] = f[n:]
				c.flags |= flagMidFrame
				return
			}
			n -= len(b.frames[0])
			c.queued -= frameOverhead
			b.frames[0] = nil
			b.frames = b.frames[1:]
		}
		if len(b.frames) == 0 {
			c.backlog = nil
		}
	}
	for n > 0 && c.qhead >= 0 {
		r := &l.refs[c.qhead]
		if n < len(r.frame) {
			r.frame = r.frame[n:]
			c.flags |= flagMidFrame
			return
		}
		n -= len(r.frame)
		c.queued -= frameOverhead
		c.qhead = r.next
	}
	if c.qhead < 0 {
		c.qtail = -1
	}
}

// spill moves c's chain out of the ref arena into its backlog, after a partial write.
func (l *loop) spill(c *conn) {
	if c.qhead < 0 {
		return
	}
	if c.backlog == nil {
		c.backlog = &backlog{}
	}
	for r := c.qhead; r >= 0; r = l.refs[r].next {
		c.backlog.frames = append(c.backlog.frames, l.refs[r].frame)
	}
	c.qhead, c.qtail = -1, -1
}

// writev is one writev(2) over iov (non-empty). The iovecs point into Go memory that iov keeps
// reachable for the duration of the call.
func writev(fd int, iov []unix.Iovec) (int, error) {
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
