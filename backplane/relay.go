package backplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huleedu/websocket-service/internal/keyset"
)

// Tuning of a relay.
const (
	maxChannelsPerCommand = 512 // channels in one SUBSCRIBE/UNSUBSCRIBE
	maxBatch              = 512 // messages handed to the sink at once
	readBufferSize        = 64 << 10
	pingInterval          = time.Second
	healthyAfter          = 5 * time.Second // a connection up this long restarts the backoff
)

// chanState is the relay's view of one channel on its connection.
//
// A channel is live (a message published now is delivered) when the last command sent for it
// was SUBSCRIBE and every command sent for it has been confirmed: Redis executes commands in
// order, so the last confirmation reflects the last command.
//
// It also holds the node's references on the channel (refcount.go): one record per channel
// rather than one per concern. Its fields are ordered and sized to fit the 32-byte size class.
type chanState struct {
	name string
	refs refs // the node's references; while want, none means it lingers
	// acks counts confirmations outstanding: at most one, since the writer sends nothing
	// while any confirmation is outstanding on the connection.
	acks   uint16
	want   bool // the node holds the channel (with references or lingering)
	onWire bool // the last command sent for it on this connection was SUBSCRIBE
	queued bool // in relay.dirty, waiting for the writer
	// resume: the node held the channel's subscription and lost it without asking (the
	// connection dropped, the server dropped it, it moved here from another connection), so
	// its next confirmation is reported to a Watcher as Resumed rather than Started.
	resume bool
	// handedOff: it is unsubscribed because it moved to another connection, which reports it
	// Resumed: its end here is not reported as Stopped.
	handedOff bool
}

func (st *chanState) live() bool { return st.onWire && st.acks == 0 }

// relay is one Pub/Sub connection and the channels mapped to it. Its run goroutine owns the
// connection's lifecycle and reads from it; its writer goroutine sends the coalesced
// SUBSCRIBE/UNSUBSCRIBE commands and pings. Everything under mu is shared between them and
// the callers of acquire/release/expire (relaychans.go) and awaitLive.
type relay struct {
	id      int
	addr    string
	sharded bool // SSUBSCRIBE/SUNSUBSCRIBE (Redis Cluster)
	dial    func(ctx context.Context, addr string) (net.Conn, error)
	sink    Sink
	watcher Watcher // sink, when it watches subscription changes; else nil
	events  relayEvents
	log     *slog.Logger

	tolerance time.Duration // stallTolerance (tests shorten it)
	epoch     time.Time     // reference of reading
	// reading is when (time since epoch, plus one) the reader began the socket read it is
	// blocked in; 0 while it is not reading (it parses or hands a batch to the sink).
	reading atomic.Int64

	kick chan struct{} // wakes the writer; capacity 1
	done chan struct{} // closed when the relay stops

	stop context.CancelFunc // stops this relay alone (its master left the cluster); set by its owner

	mu    sync.Mutex
	conn  net.Conn                // nil while disconnected
	err   error                   // why the relay is disconnected
	quiet bool                    // the current outage has been reported
	chans *keyset.Set[*chanState] // by name: a slot is the pointer alone (internal/keyset)
	dirty []*chanState
	// lingers orders the channels held without references (relaychans.go).
	lingers lingerQueue
	// inflight counts confirmations outstanding on the connection. While any are, the writer
	// holds new changes back: they pile up during the round trip and leave as one command,
	// so a burst of subscriptions costs a few commands without any fixed delay.
	inflight int
	changed  chan struct{} // closed and replaced when a channel goes live or the connection state changes
}

// relayEvents is what a relay reports to its owner.
type relayEvents interface {
	connected(r *relay, reconnect bool)
	disconnected(r *relay, err error)
	slotMoved(r *relay) // the server dropped a sharded subscription: the topology changed
	received(n int)
}

func newRelay(id int, addr string, sharded bool, linger time.Duration, dial func(context.Context, string) (net.Conn, error), sink Sink, ev relayEvents, log *slog.Logger) *relay {
	w, _ := sink.(Watcher)
	return &relay{
		id: id, addr: addr, sharded: sharded, dial: dial, sink: sink, watcher: w, events: ev,
		log:       log.With("pubsub_conn", id, "addr", addr),
		tolerance: stallTolerance,
		epoch:     time.Now(),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		err:       errors.New("not connected yet"),
		chans:     keyset.New(func(st *chanState) string { return st.name }),
		lingers:   lingerQueue{linger: linger},
		changed:   make(chan struct{}),
	}
}

func (r *relay) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// resync queues every channel whose subscription differs from what is wanted, such as one
// the server dropped when its slot moved (re-sent when the topology says it stays here).
func (r *relay) resync() {
	r.mu.Lock()
	for st := range r.chans.All() {
		r.enqueueLocked(st)
	}
	r.mu.Unlock()
	r.wake()
}

// notifyLocked wakes every awaitLive.
func (r *relay) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// status returns nil while connected, else why not.
func (r *relay) status() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return fmt.Errorf("pubsub connection %d to %s: %w", r.id, r.addr, r.err)
	}
	return nil
}

// errStopped: the relay's context ended (Close, or its master left the cluster).
var errStopped = errors.New("pubsub connection closed")

// run connects, reads and reconnects with backoff until ctx ends. The writer runs beside it.
func (r *relay) run(ctx context.Context) {
	defer close(r.done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.writeLoop(ctx)
	}()
	defer wg.Wait()

	b := newBackoff(100*time.Millisecond, 5*time.Second)
	everConnected := false
	for ctx.Err() == nil {
		conn, err := r.dial(ctx, r.addr)
		if err != nil {
			r.setDown(err)
			if !b.sleep(ctx) {
				return
			}
			continue
		}
		r.mu.Lock()
		r.conn, r.err, r.quiet = conn, nil, false
		for st := range r.chans.All() {
			r.enqueueLocked(st)
		}
		r.notifyLocked()
		r.mu.Unlock()
		r.events.connected(r, everConnected)
		everConnected = true
		r.wake()

		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		since := time.Now()
		err = r.readLoop(conn)
		stop()
		_ = conn.Close()
		if ctx.Err() != nil {
			err = errStopped
		} else {
			err = fmt.Errorf("connection lost: %w", err)
		}
		r.setDown(err)
		// A connection that the server drops at once (MOVED while the cluster topology is
		// being reloaded, an ACL refusal) must not be retried at the initial pace forever.
		if time.Since(since) >= healthyAfter {
			b.reset()
		}
		if !b.sleep(ctx) {
			return
		}
	}
}

// setDown records a lost (or failed) connection: nothing is on the wire any more, and every
// channel still wanted will be subscribed again on the next connection.
func (r *relay) setDown(err error) {
	r.mu.Lock()
	report := !r.quiet
	r.conn, r.err, r.quiet = nil, err, true
	r.inflight = 0
	var stopped []Subscription
	var gone []string // deleted after the loop: the set must not change while ranged over
	for st := range r.chans.All() {
		st.resume = st.resume || (st.want && st.onWire)
		st.onWire, st.acks = false, 0
		if !st.want {
			st.queued = false
			gone = append(gone, st.name)
			if r.watcher != nil && !st.handedOff {
				stopped = append(stopped, Subscription{Channel: st.name, Change: Stopped})
			}
		}
	}
	for _, name := range gone {
		r.chans.Delete(name)
	}
	kept := r.dirty[:0]
	for _, st := range r.dirty {
		if st.want {
			kept = append(kept, st)
		}
	}
	clear(r.dirty[len(kept):])
	r.dirty = kept
	r.notifyLocked()
	r.mu.Unlock()
	if len(stopped) > 0 {
		r.watcher.Subscriptions(stopped) // on the reader's goroutine, after its last batch
	}
	if report {
		r.events.disconnected(r, err)
	}
}

// readLoop reads replies until the connection fails or stays silent for stallTolerance
// (see there why so long, and why the deadline is armed only right before each read).
func (r *relay) readLoop(conn net.Conn) error {
	return r.receive(watchedConn{conn, r}, func() { _ = conn.SetReadDeadline(time.Now().Add(r.tolerance)) })
}

// receive reads replies from src until it fails. Messages are gathered into a batch that is
// handed to the sink whenever the read buffer holds no further complete reply, i.e. right
// before reading from the socket again (so nothing waits for more traffic), or when the
// batch is full. beforeRead runs before each read from src.
func (r *relay) receive(src io.Reader, beforeRead func()) error {
	var d dispatcher
	rr := respReader{rd: bufio.NewReaderSize(&drainedReader{src: src, drained: func() {
		r.flush(&d)
		beforeRead()
	}}, readBufferSize)}
	for {
		if err := r.readOne(&rr, &d); err != nil {
			r.flush(&d)
			return err
		}
		if d.full() {
			r.flush(&d)
		}
	}
}

// drainedReader calls drained before every read from src: the moment its bufio.Reader has
// run out of complete replies.
type drainedReader struct {
	src     io.Reader
	drained func()
}

func (d *drainedReader) Read(p []byte) (int, error) {
	d.drained()
	return d.src.Read(p)
}

// flush hands the gathered batch over and wakes subscribers whose channels went live.
func (r *relay) flush(d *dispatcher) {
	if d.confirmed {
		r.mu.Lock()
		r.notifyLocked()
		more := r.inflight == 0 && len(r.dirty) > 0
		r.mu.Unlock()
		d.confirmed = false
		if more {
			r.wake()
		}
	}
	if batch := d.take(); batch != nil {
		r.events.received(len(batch))
		r.sink.Deliver(batch)
	}
	if len(d.changes) > 0 {
		r.watcher.Subscriptions(d.changes)
		clear(d.changes)
		d.changes = d.changes[:0]
	}
}

// readOne reads one reply and applies it.
func (r *relay) readOne(rr *respReader, d *dispatcher) error {
	n, err := rr.arrayLen()
	if err != nil {
		return fmt.Errorf("read pubsub reply: %w", err)
	}
	if n == 0 {
		return nil // +PONG
	}
	kind, err := rr.peekBulk()
	if err != nil {
		return fmt.Errorf("read pubsub reply kind: %w", err)
	}
	switch k := classify(kind); {
	case k == pushMessage && n == 3:
		name, err := rr.peekBulk()
		if err != nil {
			return fmt.Errorf("read message channel: %w", err)
		}
		// Looking the channel up gives its name as a string without allocating one, and drops
		// a message that raced with an UNSUBSCRIBE. It must happen before the next read,
		// which may overwrite name.
		// want is read under the lock: expire changes it from the sweep's goroutine.
		r.mu.Lock()
		st, _ := r.chans.GetBytes(name)
		wanted := st != nil && st.want
		r.mu.Unlock()
		size, err := rr.bulkLen()
		if err != nil || size < 0 {
			return fmt.Errorf("read message payload: %w", errors.Join(err, errProtocol))
		}
		if !wanted {
			_, err := rr.rd.Discard(size + 2)
			return err
		}
		if len(d.changes) > 0 {
			r.flush(d) // the subscription changes before the message go first
		}
		payload, err := rr.readBulkInto(&d.arena, size)
		if err != nil {
			return fmt.Errorf("read message payload: %w", err)
		}
		d.add(st.name, payload, rr.rd.Buffered())
		return nil
	case (k == pushSubscribe || k == pushUnsubscribe) && n == 3:
		name, err := rr.peekBulk()
		if err != nil {
			return fmt.Errorf("read confirmation: %w", err)
		}
		r.mu.Lock()
		moved, change := r.confirmLocked(name, k, d)
		r.mu.Unlock()
		if moved {
			r.events.slotMoved(r)
		}
		if change.Change != 0 && r.watcher != nil {
			if len(d.batch) > 0 {
				r.flush(d) // the messages before the change go first
			}
			d.changes = append(d.changes, change)
		}
		_, err = rr.integer()
		return err
	default:
		for i := 1; i < n; i++ {
			if err := rr.skip(); err != nil {
				return err
			}
		}
		return nil
	}
}

// confirmLocked applies a (un)subscribe confirmation. It reports moved when the reply was
// not ours but the server dropping a sharded subscription because the channel's slot moved
// to another master: the channel is then no longer live here, and stays wanted (not re-sent)
// until the owner reloads the topology and moves it, or resyncs it if it stays here. The
// connection and every other channel on it are left alone.
func (r *relay) confirmLocked(name []byte, k pushKind, d *dispatcher) (moved bool, change Subscription) {
	st, _ := r.chans.GetBytes(name)
	if st == nil || st.acks == 0 {
		if k != pushUnsubscribe || !r.sharded {
			return false, change
		}
		if st != nil && st.onWire {
			st.onWire = false
			st.resume = st.want // messages published until it is subscribed again are lost
		}
		return true, change
	}
	st.acks--
	r.inflight--
	if r.inflight == 0 {
		d.confirmed = true // the writer may send what it held back
	}
	if st.acks > 0 {
		return false, change
	}
	switch {
	case st.onWire:
		d.confirmed = true
		change = Subscription{Channel: st.name, Change: Started}
		if st.resume {
			change.Change, st.resume = Resumed, false
		}
	case !st.want && !st.queued:
		r.chans.Delete(st.name)
		if !st.handedOff {
			change = Subscription{Channel: st.name, Change: Stopped}
		}
	}
	return false, change
}
