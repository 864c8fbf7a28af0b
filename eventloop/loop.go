//go:build linux

package eventloop

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// readBufferSize is the one read buffer a shard has; every connection reads into it.
const readBufferSize = 64 << 10

// errStopped is returned for work handed to a shard that has stopped.
var errStopped = errors.New("event loop stopped")

// loop is one shard: an event loop goroutine with its own epoll instance, connection table,
// registry, timing wheel, read buffer and write arena. Its state is grouped by concept, each
// group in the file of that concept. Only taskQueue and shardStatus are touched by other
// goroutines (each of their fields says how); everything else is owned by the loop goroutine
// and touched only by it. The groups are embedded values, not pointers, so the hot path
// reaches a field as directly as before the grouping.
type loop struct {
	id   int
	e    *Engine
	poll *poller

	// Shared with other goroutines.
	taskQueue   // how work reaches the loop (queue.go)
	shardStatus // what the Engine reads for placement, readiness and gauges

	// Owned by the loop goroutine.
	connTable                         // connections by slot (adopt.go)
	reg        *registry.Shard[*conn] // who gets a delivery (deliver.go)
	timers                            // the clock, the wheel and the periods it keeps (timers.go)
	connLimits                        // what a connection may send and be sent (sendlimit.go)
	outbound                          // the write arena and what it is written to (writev.go)
	drain      drainState             // drain.go
	stopping   bool                   // a taskStop was applied: run exits once nothing is held
	buf        []byte                 // the read buffer every connection reads into (inbound.go)
	events     []unix.EpollEvent
	// joining holds each connection's latest refresh that waits for Hooks.Join (refresh.go):
	// only it may apply. An entry lives from the refresh to its taskRegroup.
	joining map[*conn]*joined
	// resumes holds the resume of each v2 connection with flagResuming: kept out of conn,
	// whose size every idle connection pays, since a connection needs it only for a moment.
	resumes map[*conn]*v2conn
	chunk   [][]byte // a v2 replay chunk being queued (v2.go), reused
}

// shardStatus is what the Engine reads of a loop from other goroutines.
type shardStatus struct {
	failErr error        // under taskQueue.mu: why the loop stopped on its own (nil: it did not)
	down    atomic.Bool  // the loop is stopping or stopped: placement skips it
	load    atomic.Int64 // connections owned or on their way in, for least-loaded placement
	active  atomic.Int64 // registered connections, for eventloop_shard_connections
}

func newLoop(id int, e *Engine, tick time.Duration) (*loop, error) {
	p, err := newPoller()
	if err != nil {
		return nil, fmt.Errorf("shard %d: %w", id, err)
	}
	o := e.opts
	l := &loop{
		id:     id,
		e:      e,
		poll:   p,
		reg:    registry.NewIndexedShard(func(c *conn) *int32 { return &c.place }, func(c *conn) string { return c.id.User }),
		buf:    make([]byte, readBufferSize),
		events: make([]unix.EpollEvent, 256),
		timers: timers{
			start:     time.Now(),
			tick:      tick,
			now:       1,
			pingEvery: ticksFor(o.HeartbeatInterval, tick),
			silence:   ticksFor(o.ConnectionTimeout, tick),
			closeWait: ticksFor(closeWait, tick),
			frameWait: ticksFor(session.FrameTimeout, tick),
			ping:      encodeFrame(opPing, nil),
		},
		connLimits: connLimits{
			sendLimit: o.SendQueueLimit,
			maxMsg:    o.MaxMessageSize,
			frameRate: session.FrameRate(o.InboundRate),
		},
		outbound: outbound{iov: make([]unix.Iovec, 0, maxIov)},
		joining:  map[*conn]*joined{},
		resumes:  map[*conn]*v2conn{},
	}
	l.room.L = &l.mu
	l.queueLimit = shardQueueBytes
	l.wheel = newWheel(wheelSlots, l.now, func(id int32) *timerNode { return &l.conns[id].timer })
	return l, nil
}

// run is the loop goroutine. Once asked to stop it goes on until no connection is held: each
// held connection's Accept is writing its 101 and will queue taskSent within
// handshakeWriteTimeout, and only then may shutdown write the connection's close frame.
func (l *loop) run() {
	defer l.e.wg.Done()
	for !l.stopping || l.held > 0 {
		n, err := l.wait()
		if err != nil {
			l.die(err)
			break
		}
		l.clock()
		for i := range n {
			ev := &l.events[i]
			if ev.Fd == wakeSlot {
				// Reset before taking the queue, so a wake-up for work queued after the take
				// is never lost.
				l.poll.consumeWake()
				continue
			}
			l.onEvent(ev)
		}
		// The queue is taken on every turn, not only on a wake-up: lazy adoptions arrive
		// without one.
		l.pollQueue(l.runTasks())
		l.runTimers()
		l.drainStep()
		l.reapDoomed()
		l.flushDirty()
		l.notifyDrained()
	}
	l.shutdown()
}

// die records why the loop stops on its own. From here on placement skips the shard, and it is
// reported through Engine.Ready (so /readyz), eventloop_shards_failed and this log line; its
// connections are closed 1001 by shutdown.
func (l *loop) die(err error) {
	err = fmt.Errorf("shard %d failed: %w", l.id, err)
	l.down.Store(true)
	l.mu.Lock()
	l.failErr = err
	l.mu.Unlock()
	l.e.log.Error("event loop failed: its connections are closed and it takes no new ones; the node is not ready",
		"shard", l.id, "err", err)
}

// failure is why the loop stopped on its own; nil while it runs or after an orderly stop.
func (l *loop) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failErr
}

// wait waits for events until the loop's next deadline.
func (l *loop) wait() (int, error) {
	if f := l.e.faults.wait; f != nil {
		if err := f(l.id); err != nil {
			return 0, err
		}
	}
	return l.poll.wait(l.events, l.deadline())
}

// deadline is when the loop must next look at its clock or queue: the wheel's next occupied
// tick, the next drain step, or the next poll of the queue; zero on an idle shard with no
// deadlines (it waits for events only).
func (l *loop) deadline() time.Time {
	var at time.Time
	next, ok := l.wheel.next()
	if l.drain.pending() && (!ok || next > l.now+1) {
		next, ok = l.now+1, true
	}
	if ok {
		at = l.start.Add(time.Duration(next-1) * l.tick)
	}
	if l.polling.Load() && (at.IsZero() || l.pollAt.Before(at)) {
		at = l.pollAt
	}
	return at
}

// onEvent handles one epoll event of a connection.
func (l *loop) onEvent(ev *unix.EpollEvent) {
	slot := ev.Fd
	if slot < 0 || int(slot) >= len(l.conns) {
		return
	}
	c := l.conns[slot]
	if c == nil || c.fd != ev.Pad {
		return // stale: the connection ended earlier in this batch
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.onReadable(c)
	}
	if ev.Events&unix.EPOLLOUT != 0 && c.state != stateClosed {
		l.markDirty(c)
	}
}
