//go:build linux

package eventloop

import (
	"time"

	"github.com/huleedu/websocket-service/message"
)

// Closing everything: a drain closes a shard's connections 1001 spread over a window while the
// shard goes on running (Engine.Drain); shutdown closes what is left at once when the loop
// exits (Engine.Close, or a failed shard).

// drainState is a drain under way. Owned by the loop goroutine.
type drainState struct {
	begun   bool // connections adopted from now on are closed at once
	list    []*conn
	next    int // list[next:] are still to be closed
	start   time.Time
	window  time.Duration
	waiters []chan struct{} // closed once the shard has no connection left
}

// pending reports whether connections are still waiting for their turn to be closed.
func (d *drainState) pending() bool { return d.next < len(d.list) }

// beginDrain starts closing every registered connection with 1001, spread evenly over window.
func (l *loop) beginDrain(window time.Duration, done chan struct{}) {
	d := &l.drain
	d.begun = true
	d.waiters = append(d.waiters, done)
	d.list = append(d.list[:0], l.reg.All()...)
	d.next = 0
	d.start = time.Now()
	d.window = window
}

// drainStep closes the connections whose turn in the drain has come: the i-th of n at
// start + window·i/n.
func (l *loop) drainStep() {
	d := &l.drain
	n := len(d.list)
	if d.next >= n {
		return
	}
	due := n
	if d.window > 0 {
		elapsed := time.Since(d.start)
		due = min(n, int(int64(n)*int64(elapsed)/int64(d.window))+1)
	}
	for ; d.next < due; d.next++ {
		c := d.list[d.next]
		d.list[d.next] = nil
		l.startClose(c, message.CloseGoingAway, nil)
	}
	if d.next == n {
		d.list = d.list[:0]
		d.next = 0
	}
}

// notifyDrained tells Drain callers once the shard has no connection left.
func (l *loop) notifyDrained() {
	d := &l.drain
	if len(d.waiters) == 0 || l.live > 0 || d.pending() {
		return
	}
	for i, ch := range d.waiters {
		close(ch)
		d.waiters[i] = nil
	}
	d.waiters = d.waiters[:0]
}

// shutdown closes every connection (1001, close frame best-effort), refuses further tasks,
// fails the handoffs still queued, and closes the poller.
func (l *loop) shutdown() {
	l.down.Store(true)
	for _, c := range l.conns {
		if c != nil {
			l.startClose(c, message.CloseGoingAway, nil)
		}
	}
	l.flushDirty()
	for _, c := range l.conns {
		if c != nil {
			l.finish(c)
		}
	}
	l.mu.Lock()
	l.stopped = true
	rest := l.queue
	l.queue = nil
	l.dropQueued(rest)
	wakeIdle := l.wakers == 0 // else the last waker closes the eventfd
	l.mu.Unlock()
	for _, t := range rest {
		if t.kind == taskAdopt {
			l.refuse(t.h, message.CloseGoingAway, errStopped)
		}
		if t.kind == taskRegroup {
			l.regroupJoined(t.join) // every connection is closed: it gives the references back
		}
		if t.kind == taskResumed {
			t.resumed.release()
		}
		if t.done != nil {
			close(t.done)
		}
	}
	for _, ch := range l.drain.waiters {
		close(ch)
	}
	l.drain.waiters = nil
	if err := l.poll.closeEpoll(); err != nil {
		l.e.log.Error("close epoll", "shard", l.id, "err", err)
	}
	if wakeIdle {
		l.closeWake()
	}
}
