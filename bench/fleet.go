package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// dialTimeout bounds one TCP connect plus WebSocket handshake.
const dialTimeout = 10 * time.Second

// closeWait bounds how long closing waits for the server's close frame.
const closeWait = 5 * time.Second

// fleet is the connections one harness process holds, and the accounting they feed. The
// counters are atomics because every connection's read goroutine updates them; per
// connection state sits behind that connection's own mutex.
type fleet struct {
	p       *Params
	tokens  *Tokens
	targets []Target
	run     []byte
	srcs    []net.IP

	conns []*client // index i-p.Lo; nil where the dial failed

	handshake *Histogram
	latency   *Histogram // publish to receive
	echoRTT   *Histogram
	redial    *Histogram // handshakes of reconnects (with p.Reconnect)
	resume    resumer    // what a reconnect asks for of what it missed
	stopping  chan struct{}
	stopOnce  sync.Once

	reconnects, redialFailures atomic.Int64
	lastReconnect              atomic.Int64 // unix ns

	delivered, duplicated, unexpected, reordered atomic.Int64
	firstRecv, lastRecv                          atomic.Int64 // unix ns
	closedByServer, dropped                      atomic.Int64
	echoes                                       atomic.Int64
	syncs, lastResumeSync                        atomic.Int64  // v2: sync frames; when the last one on a reconnected connection came
	progress                                     chan struct{} // poked (non-blocking) on each delivery

	mu          sync.Mutex
	errorFrames map[string]int // server ErrorMessage codes received
	closeCodes  map[string]int // close codes of connections the server closed
	dialErrors  map[string]int // dial failures by kind
	unrecovered map[string]int // v2: syncs with recovered:false, by reason
	echoLost    int64          // echo round trips that got no answer
	wg          sync.WaitGroup // one per running read loop
}

func newFleet(p *Params, tokens *Tokens) (*fleet, error) {
	f := &fleet{
		p: p, tokens: tokens, targets: p.Targets(), run: []byte(p.Run),
		conns:     make([]*client, p.Hi-p.Lo),
		handshake: NewHistogram(), latency: NewHistogram(), echoRTT: NewHistogram(), redial: NewHistogram(),
		resume: freshStart{}, stopping: make(chan struct{}), unrecovered: map[string]int{},
		progress:    make(chan struct{}, 1),
		errorFrames: map[string]int{}, closeCodes: map[string]int{}, dialErrors: map[string]int{},
	}
	if p.Protocol == ProtocolV2 {
		f.resume = v2Resume{}
	}
	for _, s := range p.Src {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return nil, fmt.Errorf("--src %q is not an IP address", s)
		}
		f.srcs = append(f.srcs, ip)
	}
	return f, nil
}

// client is one connection.
type client struct {
	gws.BuiltinEventHandler
	f      *fleet
	idx    int
	socket *gws.Conn
	closed chan struct{} // closed by OnClose
	echo   chan int64    // echo replies: the sequence number they carry

	mu         sync.Mutex
	node       int // index into p.URLs of the node the connection is on
	reconnects int // successful reconnects (with p.Reconnect)
	tally      tally
	dropAt     int64 // close after this many fresh deliveries (0: never)
	dropped    bool  // reached dropAt: gone as far as the application is concerned
	closing    bool  // we started the close, so the server did not end it
	gotClose   bool
	cursors    map[string][]byte // v2: per stream, the cursor to resume from
	synced     bool              // v2: a sync arrived since the last (re)connect
	// v2: the first connect's syncs still to come; ready closes when the last one arrives.
	pendingSyncs int
	ready        chan struct{}
}

// OnMessage accounts for one frame. Frames are tiny and the work constant, so it runs inline
// on the connection's read goroutine.
func (c *client) OnMessage(socket *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	now := time.Now().UnixNano()
	if rest, ok := bytes.CutPrefix(b, []byte("Echo: ")); ok {
		if seq, ok := intField(rest, `"e":`); ok {
			select {
			case c.echo <- seq:
			default:
			}
			return
		}
	}
	if c.f.p.Protocol == ProtocolV2 && c.v2Frame(b, now) {
		return
	}
	run, target, seq, sent, ok := ParseStamp(b)
	if !ok {
		code, isErr := errorCode(b)
		if !isErr {
			code = "other"
		}
		c.f.mu.Lock()
		c.f.errorFrames[code]++
		c.f.mu.Unlock()
		return
	}
	if !bytes.Equal(run, c.f.run) {
		c.f.unexpected.Add(1)
		return
	}
	c.mu.Lock()
	if c.dropped {
		// Frames already on the wire when the consumer went away reach nobody: they stay
		// unaccounted, so they show as lost.
		c.mu.Unlock()
		return
	}
	before := c.tally.reordered
	res := c.tally.record(target, seq)
	drop := res == fresh && c.dropAt > 0 && c.tally.unique == c.dropAt
	c.dropped = drop
	reordered := c.tally.reordered != before
	c.mu.Unlock()
	switch res {
	case fresh:
		c.f.delivered.Add(1)
		c.f.latency.Record(now - sent)
		setMin(&c.f.firstRecv, now)
		setMax(&c.f.lastRecv, now)
		select {
		case c.f.progress <- struct{}{}:
		default:
		}
	case duplicate:
		c.f.duplicated.Add(1)
	case unexpected:
		c.f.unexpected.Add(1)
	}
	if reordered {
		c.f.reordered.Add(1)
	}
	if drop {
		// The deliberately lossy consumer: it goes away halfway through its messages, and
		// what it misses must show up as lost.
		c.f.dropped.Add(1)
		go c.close()
	}
}

// OnClose records who ended the connection.
func (c *client) OnClose(socket *gws.Conn, err error) {
	c.mu.Lock()
	byServer := !c.closing
	c.gotClose = true
	redial := byServer && c.f.p.Reconnect != nil && socket == c.socket
	c.mu.Unlock()
	if redial {
		// The connection stays the application's: it reconnects, and its accounting goes on.
		go c.f.reconnect(c)
		return
	}
	if byServer {
		c.f.closedByServer.Add(1)
		code := "1006"
		var ce *gws.CloseError
		if errors.As(err, &ce) {
			code = strconv.Itoa(int(ce.Code))
		}
		c.f.mu.Lock()
		c.f.closeCodes[code]++
		c.f.mu.Unlock()
	}
	close(c.closed)
}

// close sends a normal close frame and waits (bounded) for the read loop to end.
func (c *client) close() {
	c.mu.Lock()
	already := c.closing
	c.closing = true
	if already {
		c.mu.Unlock()
		return
	}
	socket := c.socket
	c.mu.Unlock()
	_ = socket.WriteClose(1000, nil)
	select {
	case <-c.closed:
	case <-time.After(closeWait):
		_ = socket.NetConn().Close()
	}
}

func setMin(a *atomic.Int64, v int64) {
	for m := a.Load(); (m == 0 || v < m) && !a.CompareAndSwap(m, v); m = a.Load() {
	}
}

func setMax(a *atomic.Int64, v int64) {
	for m := a.Load(); v > m && !a.CompareAndSwap(m, v); m = a.Load() {
	}
}

// dial opens connection i and starts its read loop.
func (f *fleet) dial(ctx context.Context, i int) (*client, error) {
	c := &client{f: f, idx: i, node: f.p.Node(i), closed: make(chan struct{}), echo: make(chan int64, 1)}
	subs := f.p.Subscriptions(i)
	c.tally = newTally(subs, f.targets)
	if i < f.p.Drop {
		c.dropAt = max(c.tally.expected()/2, 1)
	}
	if f.p.Protocol == ProtocolV2 {
		// Its streams: user, broadcast and each group.
		c.pendingSyncs = 2 + len(f.p.Identity(i).Groups)
		c.ready = make(chan struct{})
	}
	start := time.Now()
	socket, err := f.handshakeTo(c, f.p.endpoint(i))
	if err != nil {
		return nil, err
	}
	f.handshake.RecordDuration(time.Since(start))
	f.serve(c, socket)
	if c.ready != nil {
		if err := c.awaitReady(ctx); err != nil {
			c.close()
			return nil, dialError{err: err}
		}
	}
	return c, nil
}

// handshakeTo opens a WebSocket to url as connection c, with a fresh token (as a client
// fetches one before each connect), in the fleet's protocol.
func (f *fleet) handshakeTo(c *client, url string) (*gws.Conn, error) {
	tok, err := f.tokens.Token(c.idx, f.p.Identity(c.idx))
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: dialTimeout}
	if len(f.srcs) > 0 {
		dialer.LocalAddr = &net.TCPAddr{IP: f.srcs[c.idx%len(f.srcs)]}
	}
	opt := &gws.ClientOption{
		Addr:             url + "?token=" + neturl.QueryEscape(tok),
		ReadBufferSize:   f.p.ReadBuffer,
		WriteBufferSize:  f.p.ReadBuffer,
		HandshakeTimeout: dialTimeout,
		NewDialer:        func() (gws.Dialer, error) { return dialer, nil },
	}
	f.resume.dialOptions(c, opt)
	socket, resp, err := gws.NewClient(c, opt)
	if err != nil {
		de := dialError{err: err}
		if resp != nil {
			de.status = resp.StatusCode
		}
		return nil, de
	}
	if err := f.resume.opened(c, socket); err != nil {
		_ = socket.NetConn().Close()
		return nil, dialError{err: err}
	}
	return socket, nil
}

// serve makes socket c's connection and starts its read loop.
func (f *fleet) serve(c *client, socket *gws.Conn) {
	c.mu.Lock()
	c.socket = socket
	c.mu.Unlock()
	f.readLoop(socket)
}

func (f *fleet) readLoop(socket *gws.Conn) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		socket.ReadLoop()
	}()
}

// dialError keeps enough of a failed dial to group failures by kind.
type dialError struct {
	err    error
	status int // HTTP status when the server answered the upgrade with something else than 101
}

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

// kind names a dial failure for the report: the HTTP status of a refused upgrade, or the
// kind of network error (the full text of the first one goes to the log).
func (e dialError) kind() string {
	var ne net.Error
	msg := e.err.Error()
	switch {
	case e.status != 0 && e.status != 101:
		return "http-" + strconv.Itoa(e.status)
	case errors.As(e.err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(msg, "connection refused"):
		return "refused"
	case strings.Contains(msg, "address not available") || strings.Contains(msg, "cannot assign"):
		return "no-source-port"
	case strings.Contains(msg, "too many open files"):
		return "too-many-open-files"
	case strings.Contains(msg, "connection reset"):
		return "reset"
	case strings.Contains(msg, "EOF"):
		return "eof"
	case strings.Contains(msg, "handshake"):
		return "handshake-rejected"
	}
	return "other"
}

// connectAll dials this process's connections, p.Concurrency at a time, and returns when
// every dial has succeeded or failed (each is bounded by dialTimeout) or ctx ends.
func (f *fleet) connectAll(ctx context.Context) (start, end time.Time) {
	start = time.Now()
	next := atomic.Int64{}
	next.Store(int64(f.p.Lo))
	var wg sync.WaitGroup
	for range min(f.p.Concurrency, f.p.Hi-f.p.Lo) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= f.p.Hi {
					return
				}
				c, err := f.dial(ctx, i)
				if err != nil {
					f.noteDialError(err)
					continue
				}
				f.conns[i-f.p.Lo] = c
			}
		}()
	}
	wg.Wait()
	return start, time.Now()
}

func (f *fleet) noteDialError(err error) {
	kind := "other"
	var de dialError
	if errors.As(err, &de) {
		kind = de.kind()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialErrors[kind]++
	if f.dialErrors[kind] == 1 {
		logf("dial error (%s, first of its kind): %v", kind, err)
	}
}

// open counts connections that are up (dialed and not yet closed).
func (f *fleet) open() int {
	n := 0
	for _, c := range f.conns {
		if c == nil {
			continue
		}
		select {
		case <-c.closed:
		default:
			n++
		}
	}
	return n
}

// closeAll closes every connection, concurrently, and waits for the read loops to end.
// Reconnects in progress give up.
func (f *fleet) closeAll() {
	f.stopOnce.Do(func() { close(f.stopping) })
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, c := range f.conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.close()
		}()
	}
	wg.Wait()
	waitGroupTimeout(&f.wg, closeWait)
}

// waitGroupTimeout waits for wg, at most d; it reports whether wg finished.
func waitGroupTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// expected sums what the plan sends to the connections that are connected.
func (f *fleet) expected() int64 { return f.sumTallies((*tally).expected) }

// lost sums what connected connections have not received.
func (f *fleet) lost() int64 { return f.sumTallies((*tally).lost) }

func (f *fleet) sumTallies(of func(*tally) int64) int64 {
	var n int64
	for _, c := range f.conns {
		if c != nil {
			c.mu.Lock()
			n += of(&c.tally)
			c.mu.Unlock()
		}
	}
	return n
}

// dupGrace is how long the harness keeps listening after the last expected message, so a
// duplicate that trails its original is still counted.
const dupGrace = 250 * time.Millisecond

// awaitDeliveries waits until every expected message has arrived (then dupGrace more), or
// nothing has arrived for p.Quiet since the later of the last delivery and publishEnd, or
// p.Wait has passed since publishEnd.
func (f *fleet) awaitDeliveries(ctx context.Context, expected int64, publishEnd time.Time) {
	hardStop := publishEnd.Add(f.p.Wait)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for f.delivered.Load() < expected {
		last := time.Unix(0, f.lastRecv.Load())
		if last.Before(publishEnd) {
			last = publishEnd
		}
		now := time.Now()
		if now.After(hardStop) || now.Sub(last) > f.p.Quiet {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-f.progress:
		}
	}
	sleep(ctx, dupGrace)
}
