//go:build linux

package eventloop

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// Other goroutines hand a loop work through its task queue: Accept's adoptions, Deliver's
// batches, Drain, Close, and the answers of work done off the loop (Hooks.Join, history
// reads). The queue is taken whole and applied in order; the eventfd is written only for the
// first task since the loop last took it, and deliveries are bounded (shardQueueBytes).

type taskKind uint8

const (
	taskAdopt   taskKind = iota + 1 // take over an upgraded connection
	taskDeliver                     // fan a batch of backplane messages out
	taskDrain                       // close everything 1001, spread over a window
	taskStop                        // close everything and exit
	taskSent                        // Accept has written an adopted connection's 101
	taskRegroup                     // the backplane has the groups a refresh added (refresh.go)
	taskResumed                     // a v2 connection's history has been read (v2.go)
)

// task is work handed to a shard by another goroutine.
type task struct {
	kind   taskKind
	batch  []registry.Delivery
	h      *handoff
	window time.Duration
	done   chan struct{}
	size   int64 // taskDeliver: batchBytes(batch), counted in queued until applied
	join   *joined
	// taskResumed: the connection and its verdicts.
	resumed *resumed
}

// taskQueue is a loop's way in. Its fields are shared with other goroutines (under mu unless
// atomic), except spare and pollAt, which only the loop goroutine touches.
type taskQueue struct {
	mu       sync.Mutex
	queue    []task
	stopped  bool // under mu: no more tasks are accepted
	wakeOwed bool // under mu: the eventfd is written, or about to be, for the queue as it stands
	// wakers (under mu) counts the goroutines that claimed an eventfd write and have not yet
	// made it. The eventfd is closed by whichever comes last of the loop's shutdown and those
	// writes, so nobody ever writes a number that may already be someone else's descriptor.
	wakers int
	// polling: the loop takes its queue at least every adoptPoll without being woken, so an
	// adoption queued meanwhile needs no wake-up. The loop turns it on after adopting and off
	// after a poll that found none; during a burst of handshakes a shard then wakes once per
	// adoptPoll instead of once per handshake (each wake-up readies the loop goroutine and, on
	// a machine with idle cores, a thread: the context switches that kept the epoll engine's
	// handshake rate below gws's).
	polling atomic.Bool
	// queued: delivery bytes queued and not yet applied (changed under mu, read by the
	// eventloop_shard_queue_bytes gauge); Deliver waits on room while it is at queueLimit.
	queued     atomic.Int64
	queueLimit int64 // under mu; shardQueueBytes (tests lower it)
	room       sync.Cond

	spare  []task    // loop goroutine only: the previous queue, reused
	pollAt time.Time // loop goroutine only: while polling, when the queue must next be looked at
}

// adoptPoll bounds how long a queued adoption waits for its shard while the shard is polling
// (see taskQueue.polling). It delays only what the shard does for a new connection (reading
// the client's first frames, timers), never a message: a delivery always wakes the shard, and
// the queue is applied in order, so the adoption is applied first.
const adoptPoll = time.Millisecond

// shardQueueBytes bounds the delivery bytes a shard has queued and not yet applied. Deliver
// waits while a shard is at the bound, which blocks the backplane's reader goroutine, so the
// relay stops reading Redis and Redis's own `client-output-buffer-limit pubsub` takes effect
// (it disconnects a subscriber that falls too far behind; the relay reconnects and the node
// repairs the gap from history) instead of this process buffering without limit. 4 MiB is
// 64 maximum-size (64 KiB) messages, or tens of thousands of typical small notifications:
// bursts fit, while with the default of one shard per core the whole engine stays within a
// few tens of MiB, below Redis's default 32 MiB hard limit per subscriber connection.
const shardQueueBytes = 4 << 20

// deliveryOverhead is counted per delivery on top of its payload (its Delivery value, and its
// share of the batch and of the task queue), so a flood of empty payloads is bounded too.
const deliveryOverhead = 64

// submit queues t for the loop and wakes it unless a wake-up is already owed: a burst of
// tasks costs one wake-up. It returns false once the loop has stopped.
func (l *loop) submit(t task) bool {
	ok, wake := l.queueTask(t, wakeAlways)
	if wake {
		l.wake()
	}
	return ok
}

// wakePolicy says when a queued task needs the loop woken.
type wakePolicy uint8

const (
	// wakeAlways: unless a wake-up is already owed for the queue as it stands.
	wakeAlways wakePolicy = iota
	// wakeIfIdle: as wakeAlways, but not while the loop is polling (it takes its queue within
	// adoptPoll anyway).
	wakeIfIdle
	// wakeLater: never now; the caller queues a later task that wakes the loop (Accept's
	// adoption, followed by its taskSent). It does not count as an owed wake-up, so a task
	// queued meanwhile by another goroutine (a delivery) wakes the loop itself instead of
	// waiting for the caller to be scheduled again.
	wakeLater
)

// queueTask queues t without waking the loop and reports whether the caller owes it a wake-up
// (the first task since the loop last took its queue; later ones ride on that wake-up), which
// the caller must give promptly, with one call of wake. A delivery first waits for room in the
// queue (see submitDelivery).
func (l *loop) queueTask(t task, p wakePolicy) (ok, wake bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.size > 0 {
		l.awaitRoom()
	}
	if l.stopped {
		return false, false
	}
	l.queue = append(l.queue, t)
	l.queued.Add(t.size)
	if l.wakeOwed || p == wakeLater || (p == wakeIfIdle && l.polling.Load()) {
		return true, false
	}
	l.wakeOwed = true
	l.wakers++
	return true, true
}

// wake writes the eventfd for a wake-up queueTask said was owed, then gives up the claim that
// kept the eventfd open; if the loop has stopped meanwhile and this was the last claim, it
// closes the eventfd.
func (l *loop) wake() {
	if f := l.e.faults.wake; f != nil {
		f(l.id)
	}
	if err := l.poll.wake(); err != nil {
		l.e.log.Error("wake event loop", "shard", l.id, "err", err)
	}
	l.mu.Lock()
	l.wakers--
	last := l.stopped && l.wakers == 0
	l.mu.Unlock()
	if last {
		l.closeWake()
	}
}

// closeWake closes the eventfd; called exactly once, by the last of shutdown and the wakers.
func (l *loop) closeWake() {
	if err := l.poll.closeWake(); err != nil {
		l.e.log.Error("close eventfd", "shard", l.id, "err", err)
	}
}

// pollQueue keeps the loop polling while adoptions keep coming and stops once a poll found
// none. Turning it off is ordered against enqueue by the lock: an adoption queued by an Accept
// that still saw polling on is taken here; any later one sees it off and wakes the loop.
func (l *loop) pollQueue(adopted bool) {
	if !adopted && l.polling.Load() && !time.Now().Before(l.pollAt) {
		l.polling.Store(false)
		adopted = l.runTasks()
	}
	if adopted {
		l.polling.Store(true)
		l.pollAt = time.Now().Add(adoptPoll)
	}
}

// runTasks applies the queued tasks in order and reports whether it adopted a connection.
func (l *loop) runTasks() (adopted bool) {
	l.mu.Lock()
	tasks := l.queue
	l.queue = l.spare[:0]
	l.wakeOwed = false
	l.mu.Unlock()
	var size int64
	for i := range tasks {
		t := &tasks[i]
		switch t.kind {
		case taskAdopt:
			l.adopt(t.h)
			adopted = adopted || !t.h.reject
		case taskDeliver:
			size += t.size
			if l.stopping { // queued behind the stop: it goes nowhere
				l.e.metrics.Dropped(telemetry.DropShardStopped, len(t.batch))
				abandonTraces(t.batch)
				break
			}
			if f := l.e.faults.deliver; f != nil {
				f(l.id)
			}
			l.deliver(t.batch)
		case taskDrain:
			l.beginDrain(t.window, t.done)
		case taskStop:
			l.stopping = true
			l.down.Store(true)
		case taskSent:
			l.unhold(t.h)
		case taskRegroup:
			l.regroupJoined(t.join)
		case taskResumed:
			l.applyResumed(t.resumed)
		}
		tasks[i] = task{}
	}
	l.spare = tasks[:0]
	l.applied(size)
	return adopted
}

// batchBytes is what a delivery batch counts against a shard's queue bound.
func batchBytes(batch []registry.Delivery) int64 {
	n := int64(len(batch)) * deliveryOverhead
	for i := range batch {
		n += int64(len(batch[i].Payload))
	}
	return n
}

// submitDelivery queues a batch of size bytes (batchBytes). queueTask first waits, without
// holding the lock (sync.Cond.Wait releases it), while the shard's queued bytes are at its
// bound; that is never a wait on a socket, since the shard drains its queue without blocking.
// It returns false, and counts the batch dropped, when the shard has stopped (before or while
// it waited): a stopped or failed shard never blocks Deliver.
func (l *loop) submitDelivery(batch []registry.Delivery, size int64) bool {
	if l.submit(task{kind: taskDeliver, batch: batch, size: size}) {
		return true
	}
	l.e.metrics.Dropped(telemetry.DropShardStopped, len(batch))
	abandonTraces(batch)
	return false
}

// awaitRoom waits, with l.mu held on entry and on return, until the shard's queue is below its
// bound or the shard has stopped.
func (l *loop) awaitRoom() {
	for !l.stopped && l.queued.Load() >= l.queueLimit {
		l.room.Wait()
	}
}

// applied gives back the bytes of delivery batches the loop has applied and lets waiting
// Deliver calls go on.
func (l *loop) applied(size int64) {
	if size == 0 {
		return
	}
	l.mu.Lock()
	l.queued.Add(-size)
	l.mu.Unlock()
	l.room.Broadcast()
}

// dropQueued counts the deliveries of tasks a stopping shard will never apply and frees their
// bytes; l.mu is held.
func (l *loop) dropQueued(tasks []task) {
	for i := range tasks {
		if tasks[i].kind == taskDeliver {
			l.e.metrics.Dropped(telemetry.DropShardStopped, len(tasks[i].batch))
			abandonTraces(tasks[i].batch)
			l.queued.Add(-tasks[i].size)
		}
	}
	l.room.Broadcast()
}
