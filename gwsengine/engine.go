package gwsengine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// ErrClosed is returned by Accept once Drain or Close has begun.
var ErrClosed = errors.New("gwsengine: engine is shutting down")

// readBufferSize is the per-connection read buffer gws parses frames from (gws's default).
const readBufferSize = 4 << 10

// Engine is the gws engine. Its connections live in shards (shard.go), each with its own lock
// and ticker; the engine itself only holds what never changes after New, plus the shutdown
// state.
type Engine struct {
	opts    session.Options
	resume  *resume.Service // v2 connections' resume
	metrics *telemetry.Metrics
	log     *slog.Logger
	tick    time.Duration

	shards []*shard
	// plain upgrades a client that did not offer notifications.v1, withProto one that did:
	// gws answers 400 when it has SubProtocols and the client offers none of them.
	plain, withProto *gws.Upgrader
	withV2           *gws.Upgrader // a client that offered notifications.v2

	sendQueueLimit int64
	frameRate      session.Rate // INBOUND_RATE_PER_CONNECTION
	slowConsumer   []byte       // SLOW_CONSUMER ErrorMessage
	tooLargeFrame  []byte       // MESSAGE_TOO_LARGE ErrorMessage as a text frame (wire.go)

	scratch sync.Pool // *[]*conn, delivery target lists

	// life orders Accept's wg.Add against Close's wg.Wait; closing stops new connections.
	life      sync.RWMutex
	closing   atomic.Bool
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // read loops, shard tickers, urgent closes
}

// New builds an engine and starts its shard tickers; Close stops them.
func New(opts session.Options) (*Engine, error) {
	var errs []error
	if opts.Policy == nil {
		errs = append(errs, errors.New("session.Options.Policy is required"))
	}
	if opts.Hooks == nil {
		errs = append(errs, errors.New("session.Options.Hooks is required"))
	}
	if opts.Metrics == nil {
		errs = append(errs, errors.New("session.Options.Metrics is required"))
	}
	if opts.HeartbeatInterval <= 0 || opts.ConnectionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat interval (%v) and connection timeout (%v) must be positive", opts.HeartbeatInterval, opts.ConnectionTimeout))
	}
	if opts.MaxMessageSize <= 0 || opts.SendQueueLimit <= 0 {
		errs = append(errs, fmt.Errorf("max message size (%d) and send queue limit (%d) must be positive", opts.MaxMessageSize, opts.SendQueueLimit))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("gwsengine: %w", errors.Join(errs...))
	}
	if opts.Shards <= 0 {
		opts.Shards = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		opts:           opts,
		resume:         opts.Resume,
		metrics:        opts.Metrics,
		log:            opts.Logger,
		tick:           tickFor(opts.HeartbeatInterval, opts.ConnectionTimeout),
		sendQueueLimit: int64(opts.SendQueueLimit),
		frameRate:      session.FrameRate(opts.InboundRate),
		slowConsumer:   message.ErrorJSON(message.CodeSlowConsumer),
		tooLargeFrame:  rfc6455.EncodeFrame(rfc6455.OpText, message.ErrorJSON(message.CodeMessageTooLarge)),
		stop:           make(chan struct{}),
	}
	if e.resume == nil {
		e.resume = resume.NewService(resume.Options{Metrics: opts.Metrics})
	}
	e.scratch.New = func() any { s := make([]*conn, 0, 64); return &s }
	e.plain = gws.NewUpgrader(events{e}, e.serverOption(nil))
	e.withProto = gws.NewUpgrader(events{e}, e.serverOption([]string{session.Subprotocol}))
	e.withV2 = gws.NewUpgrader(events{e}, e.serverOption([]string{session.SubprotocolV2}))
	for i := range opts.Shards {
		s := newShard(i)
		e.shards = append(e.shards, s)
		opts.Metrics.ShardConnections(i, func() float64 { return float64(s.n.Load()) })
		e.wg.Add(1)
		go s.run(e, e.stop)
	}
	return e, nil
}

func (e *Engine) serverOption(subprotocols []string) *gws.ServerOption {
	return &gws.ServerOption{
		ReadMaxPayloadSize: e.opts.MaxMessageSize,
		// gws refuses to write a payload over its limit (16 MiB by default) and fails the
		// connection instead. What the engine writes is already bounded elsewhere: an echo by
		// MaxMessageSize plus its prefix, a delivery by what the backplane accepts (the epoll
		// engine writes it whatever its size). So gws sets no write limit of its own.
		WriteMaxPayloadSize: math.MaxInt,
		ReadBufferSize:      readBufferSize,
		CheckUtf8Enabled:    true,
		SubProtocols:        subprotocols,
		NewSession:          func() gws.SessionStorage { return &slot{} },
		Logger:              logger{e.log},
		Recovery:            gws.Recovery, // a panic in a callback ends that connection, not the process
	}
}

// Accept upgrades an authorised request and serves the connection on its own goroutine. Once
// shutdown has begun it answers 503 instead and returns ErrClosed.
func (e *Engine) Accept(w http.ResponseWriter, r *http.Request, a session.Admission) error {
	if !e.enter() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return ErrClosed
	}
	socket, wr, err := e.upgrade(w, r, a.Subprotocol, true)
	if err != nil {
		e.wg.Done()
		return err
	}
	s := e.leastLoaded()
	tracing.Shard(r.Context(), s.index)
	c := &conn{e: e, shard: s, id: a.Identity, socket: socket, wire: wr, done: make(chan struct{})}
	c.settled = c.settleDelivery
	c.expires.Store(math.MaxInt64) // a token without exp (auth refuses those) never expires
	if !a.Expires.IsZero() {
		c.expires.Store(a.Expires.UnixNano())
	}
	c.nextPing = time.Now().Add(e.opts.HeartbeatInterval).UnixNano()
	socket.Session().(*slot).c = c
	// The wire still holds the 101 gws wrote: the client sees it only once c is in its shard,
	// so a message published after the client's open reaches it. A frame delivered between add
	// and open is held behind the 101 and written with it, in order.
	if a.V2() {
		c.acceptV2()
	}
	s.add(c)
	e.metrics.ConnectionsActive.Inc() // counted, like registered, before the client sees the 101
	if err := wr.open(); err != nil {
		e.log.Debug("accept: writing the 101 failed", "error", err) // the read loop ends and releases c
	}
	if !a.Started.IsZero() {
		e.metrics.Handshake(a.Started)
	}
	if e.closing.Load() {
		// Close or Drain took its snapshot before add; close c here so it is not left behind.
		c.shut(message.CloseGoingAway, nil, false)
	}
	go func() {
		defer e.wg.Done()
		socket.ReadLoop()
	}()
	return nil
}

// Reject completes the upgrade only to say why the connection is refused: one ErrorMessage,
// a close frame with closeCode, a short wait for the client's close frame. It returns once
// the socket is closed.
func (e *Engine) Reject(w http.ResponseWriter, r *http.Request, subprotocol, code string, closeCode uint16) {
	socket, wr, err := e.upgrade(w, r, subprotocol, false)
	if err != nil {
		e.log.Debug("reject: upgrade failed", "error", err)
		return
	}
	_ = wr.SetWriteDeadline(time.Now().Add(closeGrace))
	if socket.WriteMessage(gws.OpcodeText, message.ErrorJSON(code)) == nil {
		e.metrics.MessagesSent.Inc()
	}
	_ = socket.WriteClose(closeCode, nil)
	socket.ReadLoop() // reads until the client's close frame, EOF or closeGrace; releases the wire
}

// upgrade hijacks the connection itself, rather than through gws's Upgrade, so that gws reads
// and writes through a wire. With hold, the wire keeps the 101 (and whatever follows) until
// its open is called.
func (e *Engine) upgrade(w http.ResponseWriter, r *http.Request, subprotocol string, hold bool) (*gws.Conn, *wire, error) {
	up := e.plain
	switch subprotocol {
	case session.Subprotocol:
		up = e.withProto
	case session.SubprotocolV2:
		up = e.withV2
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("gwsengine: upgrade: %T cannot be hijacked", w)
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("gwsengine: upgrade: hijack: %w", err)
	}
	if brw.Reader.Buffered() > 0 {
		_ = nc.Close()
		return nil, nil, errors.New("gwsengine: upgrade: client sent data before the handshake completed")
	}
	wr := newWire(nc, e.opts.MaxMessageSize, hold, e.tooLargeFrame, e.metrics)
	socket, err := up.UpgradeFromConn(wr, bufio.NewReaderSize(wr, readBufferSize), r)
	if err != nil {
		// gws answered 400 (held, if hold) and called Close, which only half-closes a wire.
		_ = wr.open()
		_ = wr.release()
		return nil, nil, fmt.Errorf("gwsengine: upgrade: %w", err)
	}
	wr.socket = socket // before the read loop starts: refuse closes through it
	return socket, wr, nil
}

// enter admits one more connection unless shutdown has begun.
func (e *Engine) enter() bool {
	e.life.RLock()
	defer e.life.RUnlock()
	if e.closing.Load() {
		return false
	}
	e.wg.Add(1)
	return true
}

// beginClosing refuses further connections. After it returns no Accept can add to wg.
func (e *Engine) beginClosing() {
	e.life.Lock()
	e.closing.Store(true)
	e.life.Unlock()
}

func (e *Engine) leastLoaded() *shard {
	best := e.shards[0]
	for _, s := range e.shards[1:] {
		if s.n.Load() < best.n.Load() {
			best = s
		}
	}
	return best
}

func (e *Engine) snapshot() []*conn {
	var out []*conn
	for _, s := range e.shards {
		out = s.all(out)
	}
	return out
}

// Drain closes every connection with 1001, connection i of N at i*window/N, then waits for
// all of them to end. New connections are refused from the start.
func (e *Engine) Drain(ctx context.Context, window time.Duration) error {
	e.beginClosing()
	conns := e.snapshot()
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i, c := range conns {
		at := start.Add(window * time.Duration(i) / time.Duration(len(conns)))
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return fmt.Errorf("gwsengine: drain: %d of %d connections closed: %w", i, len(conns), ctx.Err())
			case <-timer.C:
			}
		}
		c.shut(message.CloseGoingAway, nil, false)
	}
	for i, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("gwsengine: drain: waiting for %d connections to end: %w", len(conns)-i, ctx.Err())
		}
	}
	return nil
}

// Close closes every remaining connection with 1001, stops the shard tickers and returns once
// every goroutine the engine started has ended (at most about 2*closeGrace).
func (e *Engine) Close() error {
	e.beginClosing()
	e.closeOnce.Do(func() { close(e.stop) })
	for _, c := range e.snapshot() {
		c.shut(message.CloseGoingAway, nil, false)
	}
	e.wg.Wait()
	return nil
}

// logger hands gws's own error reports (a recovered panic) to the service's logger.
type logger struct{ l *slog.Logger }

func (l logger) Error(v ...any) { l.l.Error("gws", "detail", fmt.Sprint(v...)) }
