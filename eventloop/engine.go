//go:build linux

package eventloop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// ErrClosed is returned by Accept once the engine is draining or closed.
var ErrClosed = errors.New("eventloop: engine is draining or closed")

// errNoShard is returned by Accept when every shard has stopped (see Engine.Ready).
var errNoShard = errors.New("eventloop: no event loop is running")

// defaultMaxMessageSize applies when Options.MaxMessageSize is not positive (README,
// "Configuration").
const defaultMaxMessageSize = 65536

// defaultSendQueueLimit applies when Options.SendQueueLimit is not positive (README,
// "Configuration").
const defaultSendQueueLimit = 1 << 20

// Engine is the epoll engine: opts.Shards event loops, each owning its connections. It is
// safe for concurrent use; every method hands work to the loops through their queues.
type Engine struct {
	opts    session.Options
	hooks   session.Hooks
	metrics *telemetry.Metrics
	log     *slog.Logger
	loops   []*loop
	wg      sync.WaitGroup

	draining  atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once

	faults *faults // tests only; every hook nil otherwise
	resume *resume.Service
}

// noHooks is used when Options.Hooks is nil.
type noHooks struct{}

func (noHooks) Closed(*session.Identity, uint16) {}

func (noHooks) Join(_ []string, done func()) { go done() }

func (noHooks) Leave([]string) {}

// New starts the engine's event loops.
func New(opts session.Options) (*Engine, error) { return newEngine(opts, &faults{}) }

// newEngine is New with fault injection (tests pass hooks; New passes none).
func newEngine(opts session.Options, f *faults) (*Engine, error) {
	if opts.Policy == nil {
		return nil, errors.New("eventloop: Options.Policy is required")
	}
	if opts.Shards <= 0 {
		opts.Shards = runtime.GOMAXPROCS(0)
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = defaultMaxMessageSize
	}
	if opts.SendQueueLimit <= 0 {
		opts.SendQueueLimit = defaultSendQueueLimit
	}
	e := &Engine{opts: opts, hooks: opts.Hooks, metrics: opts.Metrics, log: opts.Logger, faults: f, resume: opts.Resume}
	if e.resume == nil {
		e.resume = resume.NewService(resume.Options{Metrics: opts.Metrics})
	}
	if e.hooks == nil {
		e.hooks = noHooks{}
	}
	if e.metrics == nil {
		e.metrics = telemetry.New()
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	tick := wheelTick(opts)
	for i := range opts.Shards {
		l, err := newLoop(i, e, tick)
		if err != nil {
			for _, started := range e.loops {
				_ = started.poll.close()
			}
			return nil, fmt.Errorf("eventloop: %w", err)
		}
		e.loops = append(e.loops, l)
	}
	e.metrics.ShardsFailed(func() float64 { return float64(e.failedShards()) })
	for _, l := range e.loops {
		e.metrics.ShardConnections(l.id, func() float64 { return float64(l.active.Load()) })
		e.metrics.ShardQueueBytes(l.id, func() float64 { return float64(l.queued.Load()) })
		e.wg.Add(1)
		go l.run()
	}
	return e, nil
}

// wheelTick is the timing wheel's resolution: a tenth of the shortest period the wheel keeps
// (heartbeat, silence timeout, closing handshake), between 1 ms and 100 ms.
func wheelTick(o session.Options) time.Duration {
	shortest := closeWait
	for _, d := range []time.Duration{o.HeartbeatInterval, o.ConnectionTimeout} {
		if d > 0 {
			shortest = min(shortest, d)
		}
	}
	return min(max(shortest/10, time.Millisecond), 100*time.Millisecond)
}

// Accept validates the upgrade request, hijacks the connection, hands its descriptor to the
// least loaded shard and writes the 101 response itself. It returns without waiting for the
// shard: from then on the engine owns the connection and reports its end exactly once through
// Hooks.Closed, even if the shard never got to register it (stopped meanwhile: 1001; epoll
// refused the descriptor: 1011). On a bad handshake the client gets HTTP 400 (426 for a wrong
// version) and the error wraps ErrHandshake; on error nothing is registered and Hooks.Closed
// is not called.
//
// Why the 101 is written here and the shard is not waited for: each put a cross-thread
// wake-up on every handshake (bench/RESULTS.md). Ordering still holds: the adoption is queued
// before the 101 is written, and the shard's queue is FIFO, so any delivery of a message
// published after the client saw the 101 is applied after the registration. The shard writes
// nothing for the connection until taskSent says the 101 is out, and the original descriptor
// stays open until the write returns, so the write can never land on a reused fd. The
// adoption never wakes the shard (wakeLater); taskSent does, unless the shard is polling
// (loop.polling). Placement skips a shard that has stopped or failed; with none running the
// client gets a plain 503 and nothing is hijacked.
func (e *Engine) Accept(w http.ResponseWriter, r *http.Request, a session.Admission) error {
	if e.closed.Load() || e.draining.Load() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return ErrClosed
	}
	resp, herr := checkHandshake(r)
	if herr != nil {
		herr.write(w)
		return fmt.Errorf("accept: %w", herr)
	}
	if e.leastLoaded() == nil {
		http.Error(w, "no event loop is running", http.StatusServiceUnavailable)
		return fmt.Errorf("accept: %w", errNoShard)
	}
	nc, fd, pending, err := takeConn(w)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer nc.Close()
	h := &handoff{fd: fd, pending: pending, adm: a}
	// Queue the adoption but wake the shard only after the 101 is out (wakeLater): a wake-up
	// here would have the kernel run the shard's thread ahead of this one on a busy machine.
	l, _ := e.place(h, wakeLater)
	if l == nil {
		_ = e.closeFD(fd) // not queued: still this goroutine's
		return fmt.Errorf("accept fd %d: %w", fd, errNoShard)
	}
	tracing.Shard(r.Context(), l.id)
	// From here on the descriptor is the shard's: this goroutine writes only through nc.
	if f := e.faults.adoptQueued; f != nil {
		f()
	}
	h.sendErr = nc.write101(resp)
	// A failed write is the shard's to handle: unhold ends the connection through the abort
	// path (Hooks.Closed with 1006). If the shard stopped meanwhile, it has already ended it.
	if _, wake := l.queueTask(task{kind: taskSent, h: h}, wakeIfIdle); wake {
		l.wake()
	}
	if !a.Started.IsZero() {
		e.metrics.Handshake(a.Started)
	}
	return nil
}

// original is the connection Accept writes the 101 through and then closes, while a shard
// owns a duplicate: net/http's hijacked net.Conn, or the descriptor the front accepted.
type original interface {
	write101(b []byte) error
	Close() error
}

// takeConn takes the upgrade's connection from whoever read its request: the front
// (frontWriter) or net/http (a hijack).
func takeConn(w http.ResponseWriter) (nc original, fd int, pending []byte, err error) {
	if fw, ok := w.(*frontWriter); ok {
		fd, pending, err := fw.dup()
		if err != nil {
			return nil, -1, nil, err
		}
		return fw, fd, pending, nil
	}
	c, fd, pending, err := hijackKeep(w)
	if err != nil {
		return nil, -1, nil, err
	}
	return hijacked{c}, fd, pending, nil
}

// hijacked is a connection net/http gave up.
type hijacked struct{ net.Conn }

func (c hijacked) write101(b []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(handshakeWriteTimeout))
	_, err := c.Write(b)
	return err
}

// handshakeWriteTimeout bounds the 101 write; an empty socket takes ~200 bytes at once.
const handshakeWriteTimeout = 5 * time.Second

// Reject completes the upgrade, sends the ErrorMessage for code and a close frame with
// closeCode, and leaves a shard to wait (at most a second) for the client's close before
// closing the socket. Nothing is registered and Hooks.Closed is never called. It does not
// wait for the shard: once the handoff is queued the descriptor is the shard's (see the
// package doc, "Descriptor ownership").
func (e *Engine) Reject(w http.ResponseWriter, r *http.Request, subprotocol, code string, closeCode uint16) {
	_ = subprotocol // the 101 selects session.Subprotocol only when the request offered it
	resp, herr := checkHandshake(r)
	if herr != nil {
		herr.write(w)
		return
	}
	resp = rfc6455.AppendFrame(resp, opText, message.ErrorJSON(code))
	resp = append(resp, encodeClose(closeCode)...)
	var fd int
	if fw, ok := w.(*frontWriter); ok {
		fd, _ = fw.take()
	} else {
		var err error
		if fd, _, err = hijack(w); err != nil {
			e.log.Warn("reject: hijack failed", "err", err)
			return
		}
	}
	h := &handoff{fd: fd, response: resp, reject: true}
	if e.handOff(h) == nil {
		// No shard took it, so the descriptor is still this goroutine's.
		e.rejectNow(h)
	}
}

// rejectNow is a rejection with no shard to wait in: it sends what of the response fits
// without blocking and closes the descriptor. Only the handoff's owner may call it.
func (e *Engine) rejectNow(h *handoff) {
	_, _ = unix.Write(h.fd, h.response)
	_ = e.closeFD(h.fd)
}

// handOff queues a hijacked descriptor's adoption on the least loaded shard and returns that
// shard. From then on the descriptor is the shard's and the caller must not touch it again,
// not even on an error path. On nil no shard took it and it is still the caller's.
func (e *Engine) handOff(h *handoff) *loop {
	l, wake := e.place(h, wakeAlways)
	if wake {
		l.wake()
	}
	return l
}

// place queues h's adoption on the least loaded running shard, trying the next one if that
// one stopped meanwhile, and returns it with whether the caller owes it a wake-up (as
// queueTask). nil: every shard has stopped, and the descriptor is still the caller's.
func (e *Engine) place(h *handoff, p wakePolicy) (*loop, bool) {
	for range e.loops {
		l := e.leastLoaded()
		if l == nil {
			break
		}
		l.load.Add(1)
		if ok, wake := l.queueTask(task{kind: taskAdopt, h: h}, p); ok {
			return l, wake
		}
		l.load.Add(-1) // it stopped after leastLoaded looked: it is down now, so skipped next
	}
	return nil, false
}

// leastLoaded is the running shard with the fewest connections; nil when none runs. A shard
// that stopped (its wait failed) has no connections, so without the check it would look the
// least loaded and get every new one.
func (e *Engine) leastLoaded() *loop {
	var best *loop
	for _, l := range e.loops {
		if !l.down.Load() && (best == nil || l.load.Load() < best.load.Load()) {
			best = l
		}
	}
	return best
}

// Ready returns nil while every shard runs, else which shards failed and why. A failed shard
// (its epoll wait returned an error) has closed its connections and takes no new ones: the
// node carries on with fewer shards, but should be replaced, so the HTTP layer reports it
// not ready (/readyz).
func (e *Engine) Ready() error {
	var errs []error
	for _, l := range e.loops {
		if err := l.failure(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// failedShards counts the shards that failed, for eventloop_shards_failed.
func (e *Engine) failedShards() int {
	n := 0
	for _, l := range e.loops {
		if l.failure() != nil {
			n++
		}
	}
	return n
}

// Deliver hands the batch to every shard (one queue entry and at most one wake-up each). It
// never blocks on a socket, but waits while a shard's queue holds shardQueueBytes of
// deliveries not yet applied, so back-pressure reaches the backplane's reader (see
// shardQueueBytes). A stopped or failed shard never makes it wait: the batch is dropped for
// that shard and counted. The batch and its payloads must not be modified afterwards.
func (e *Engine) Deliver(batch []registry.Delivery) {
	if len(batch) == 0 {
		return
	}
	size := batchBytes(batch)
	holdTraces(batch, len(e.loops))
	for _, l := range e.loops {
		l.submitDelivery(batch, size)
	}
}

// Drain stops new upgrades and closes every connection with 1001, the closes spread evenly
// over window, returning when every connection has ended or ctx is done.
func (e *Engine) Drain(ctx context.Context, window time.Duration) error {
	e.draining.Store(true)
	dones := make([]chan struct{}, len(e.loops))
	for i, l := range e.loops {
		dones[i] = make(chan struct{})
		if !l.submit(task{kind: taskDrain, window: window, done: dones[i]}) {
			close(dones[i])
		}
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return fmt.Errorf("drain: %w", ctx.Err())
		}
	}
	return nil
}

// Close stops every loop, closing the connections that remain (1001, close frame
// best-effort, Hooks.Closed for each) and every descriptor, and waits for the loops to exit.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		for _, l := range e.loops {
			l.submit(task{kind: taskStop})
		}
		e.wg.Wait()
	})
	return nil
}
