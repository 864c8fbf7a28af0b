//go:build linux

package eventloop

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// readBufferSize is the one read buffer a shard has; every connection reads into it.
const readBufferSize = 64 << 10

// wheelSlots is the size of each shard's timing wheel (a power of two).
const wheelSlots = 4096

// closeWait bounds how long a closing connection waits for the peer's close frame.
const closeWait = time.Second

// errStopped is returned for work handed to a shard that has stopped.
var errStopped = errors.New("event loop stopped")

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
	size   int64 // taskDeliver: batchBytes(batch), counted in loop.queued until applied
	join   *joined
	// taskResumed: the connection and its verdicts.
	resumed *resumed
}

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

// adoptPoll bounds how long a queued adoption waits for its shard while the shard is polling
// (see loop.polling). It delays only what the shard does for a new connection (reading the
// client's first frames, timers), never a message: a delivery always wakes the shard, and the
// queue is applied in order, so the adoption is applied first.
const adoptPoll = time.Millisecond

// loop is one shard: an event loop goroutine with its own epoll instance, connection table,
// registry, timing wheel, read buffer and write arena. Only the fields in the "cross-goroutine"
// group are touched by other goroutines; everything else is owned by the loop goroutine and
// touched only by it.
type loop struct {
	id   int
	e    *Engine
	poll *poller

	// Cross-goroutine.
	mu       sync.Mutex
	queue    []task
	stopped  bool  // under mu: no more tasks are accepted
	wakeOwed bool  // under mu: the eventfd is written, or about to be, for the queue as it stands
	failErr  error // under mu: why the loop stopped on its own (nil: it did not)
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
	down       atomic.Bool  // the loop is stopping or stopped: placement skips it
	load       atomic.Int64 // connections owned or on their way in, for least-loaded placement
	active     atomic.Int64 // registered connections, for eventloop_shard_connections

	// Owned by the loop goroutine.
	conns    []*conn // by slot
	free     []int32 // free slots
	live     int     // connections with an open fd
	reg      *registry.Shard[*conn]
	wheel    *wheel
	buf      []byte
	events   []unix.EpollEvent
	spare    []task // the previous queue, reused
	refs     []outRef
	dirty    []*conn
	doomed   []*conn
	iov      []unix.Iovec
	cur      *conn // the connection whose bytes are being parsed
	held     int   // connections with flagHeld (Accept still writing their 101)
	fanout   bool  // deliver is iterating registry lists: closes must wait for reapDoomed
	stopping bool
	pollAt   time.Time // while polling: when the queue must next be looked at
	// joining holds each connection's latest refresh that waits for Hooks.Join (refresh.go):
	// only it may apply. An entry lives from the refresh to its taskRegroup.
	joining map[*conn]*joined
	chunk   [][]byte // a v2 replay chunk being queued (v2.go), reused
	// resumes holds the resume of each v2 connection with flagResuming: kept out of conn,
	// whose size every idle connection pays, since a connection needs it only for a moment.
	resumes map[*conn]*v2conn

	start     time.Time
	tick      time.Duration
	now       uint32 // current tick, from 1
	nanos     int64  // time since start at this loop turn: the inbound limits' clock
	frameRate session.Rate
	pingEvery uint32 // ticks; 0: no heartbeat
	silence   uint32 // ticks; 0: no silence timeout
	closeWait uint32 // ticks
	frameWait uint32 // ticks: session.FrameTimeout
	sendLimit int
	maxMsg    int
	ping      []byte // the heartbeat frame, shared by every connection

	draining     bool // a drain has begun: connections adopted from now on are closed at once
	drainList    []*conn
	drainNext    int
	drainStart   time.Time
	drainWindow  time.Duration
	drainWaiters []chan struct{}
}

func newLoop(id int, e *Engine, tick time.Duration) (*loop, error) {
	p, err := newPoller()
	if err != nil {
		return nil, fmt.Errorf("shard %d: %w", id, err)
	}
	o := e.opts
	l := &loop{
		id:        id,
		e:         e,
		poll:      p,
		reg:       registry.NewIndexedShard(func(c *conn) *int32 { return &c.place }),
		buf:       make([]byte, readBufferSize),
		events:    make([]unix.EpollEvent, 256),
		iov:       make([]unix.Iovec, 0, maxIov),
		start:     time.Now(),
		tick:      tick,
		now:       1,
		pingEvery: ticksFor(o.HeartbeatInterval, tick),
		silence:   ticksFor(o.ConnectionTimeout, tick),
		closeWait: ticksFor(closeWait, tick),
		frameWait: ticksFor(session.FrameTimeout, tick),
		sendLimit: o.SendQueueLimit,
		maxMsg:    o.MaxMessageSize,
		frameRate: session.FrameRate(o.InboundRate),
		joining:   map[*conn]*joined{},
		resumes:   map[*conn]*v2conn{},
		ping:      encodeFrame(opPing, nil),
	}
	l.room.L = &l.mu
	l.queueLimit = shardQueueBytes
	l.wheel = newWheel(wheelSlots, l.now, func(id int32) *timerNode { return &l.conns[id].timer })
	return l, nil
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

// clock advances the loop's notion of now.
func (l *loop) clock() {
	d := time.Since(l.start)
	l.nanos = int64(d)
	l.now = uint32(d/l.tick) + 1
}

// deadline is when the loop must next look at its clock or queue: the wheel's next occupied
// tick, the next drain step, or the next poll of the queue; zero on an idle shard with no
// deadlines (it waits for events only).
func (l *loop) deadline() time.Time {
	var at time.Time
	next, ok := l.wheel.next()
	if l.drainNext < len(l.drainList) && (!ok || next > l.now+1) {
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
	l.cur = c
	code := c.parser.feed(data, l.maxMsg, l)
	l.cur = nil
	if code != 0 {
		l.fail(c, code)
		return
	}
	if c.state != stateOpen {
		return // closing: the closing deadline bounds it, and the wheel holds that one
	}
	if c.parser.begun() { // a new incomplete frame: its deadline starts now and only now
		c.parser.setDeadline(l.now + l.frameWait)
		l.schedule(c)
	}
}

// onMessage answers a whole client message: binary is echoed, text goes to the policy.
func (l *loop) onMessage(op byte, payload []byte) bool {
	c := l.cur
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

func (l *loop) onControl(op byte, payload []byte) bool {
	c := l.cur
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
	if l.draining { // handed over while the drain began: it would never be drained otherwise
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

func (l *loop) allocSlot() int32 {
	if n := len(l.free); n > 0 {
		s := l.free[n-1]
		l.free = l.free[:n-1]
		return s
	}
	l.conns = append(l.conns, nil)
	return int32(len(l.conns) - 1)
}

// deliver fans a batch out: each payload is encoded once per shard and the same frame is
// queued to every target; connections are written once, after the whole batch. A target that
// goes over the send queue limit inside the batch is first written right away (non-blocking),
// so a batch larger than the limit does not doom a reader that keeps up; only what its socket
// will not take counts against it.
func (l *loop) deliver(batch []registry.Delivery) {
	l.fanout = true
	for i := range batch {
		d := &batch[i]
		targets := l.reg.Lookup(d.Target)
		if len(targets) == 0 {
			continue
		}
		// v1 gets the payload verbatim (nothing for a gap notice); v2 its frame, built once
		// for every v2 target of the shard, and only if there is one.
		var frame, v2 []byte
		var stream string
		sent := 0
		for _, c := range targets {
			if c.flags&flagDoomed != 0 {
				continue
			}
			f := frame
			if c.flags&flagV2 == 0 {
				if d.Gap != nil {
					continue
				}
				if frame == nil {
					frame = encodeFrame(opText, d.Payload)
				}
				f = frame
			} else {
				if v2 == nil {
					v2 = encodeFrame(opText, resume.DeliveryFrame(d))
				}
				if c.flags&(flagResuming|flagFloor) != 0 {
					if stream == "" {
						stream = d.Target.Stream()
					}
					if l.holdOrDrop(c, stream, d.Position, v2) {
						continue
					}
				}
				f = v2
			}
			sent++
			l.send(c, f)
		}
		l.e.metrics.MessagesSent.Add(sent)
	}
	l.fanout = false
	l.reapDoomed()
}

// schedule puts c in the wheel slot of its earliest deadline.
func (l *loop) schedule(c *conn) {
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

func (l *loop) runTimers() {
	for _, id := range l.wheel.expire(l.now) {
		if c := l.conns[id]; c != nil {
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
		if now >= c.pingAt {
			l.finish(c)
		} else {
			l.wheel.schedule(c.slot, c.pingAt)
		}
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

// beginDrain starts closing every registered connection with 1001, spread evenly over window.
func (l *loop) beginDrain(window time.Duration, done chan struct{}) {
	l.draining = true
	l.drainWaiters = append(l.drainWaiters, done)
	l.drainList = append(l.drainList[:0], l.reg.All()...)
	l.drainNext = 0
	l.drainStart = time.Now()
	l.drainWindow = window
}

// drainStep closes the connections whose turn in the drain has come: the i-th of n at
// start + window·i/n.
func (l *loop) drainStep() {
	n := len(l.drainList)
	if l.drainNext >= n {
		return
	}
	due := n
	if l.drainWindow > 0 {
		elapsed := time.Since(l.drainStart)
		due = min(n, int(int64(n)*int64(elapsed)/int64(l.drainWindow))+1)
	}
	for ; l.drainNext < due; l.drainNext++ {
		c := l.drainList[l.drainNext]
		l.drainList[l.drainNext] = nil
		l.startClose(c, message.CloseGoingAway, nil)
	}
	if l.drainNext == n {
		l.drainList = l.drainList[:0]
		l.drainNext = 0
	}
}

// notifyDrained tells Drain callers once the shard has no connection left.
func (l *loop) notifyDrained() {
	if len(l.drainWaiters) == 0 || l.live > 0 || l.drainNext < len(l.drainList) {
		return
	}
	for i, ch := range l.drainWaiters {
		close(ch)
		l.drainWaiters[i] = nil
	}
	l.drainWaiters = l.drainWaiters[:0]
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
	for _, ch := range l.drainWaiters {
		close(ch)
	}
	l.drainWaiters = nil
	if err := l.poll.closeEpoll(); err != nil {
		l.e.log.Error("close epoll", "shard", l.id, "err", err)
	}
	if wakeIdle {
		l.closeWake()
	}
}
