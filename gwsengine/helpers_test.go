package gwsengine

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

var testSecret = []byte("gwsengine-test-secret-0123456789abcdef")

// closure is one Hooks.Closed call.
type closure struct {
	user string
	code uint16
	at   time.Time
}

// hooks records Hooks.Closed and fails the test on a second call for the same connection
// (the engine passes a pointer to each connection's own Identity).
type hooks struct {
	t      testing.TB
	mu     sync.Mutex
	seen   map[*session.Identity]bool
	closed []closure
	ch     chan closure
}

func newHooks(t testing.TB) *hooks {
	return &hooks{t: t, seen: map[*session.Identity]bool{}, ch: make(chan closure, 4096)}
}

func (h *hooks) Closed(id *session.Identity, code uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[id] {
		h.t.Errorf("Hooks.Closed called twice for a connection of %q (code %d)", id.User, code)
	}
	h.seen[id] = true
	c := closure{user: id.User, code: code, at: time.Now()}
	h.closed = append(h.closed, c)
	h.ch <- c
}

// Join and Leave stand for a backplane that has every channel at once.
func (h *hooks) Join(_ []string, done func()) { go done() }

func (h *hooks) Leave([]string) {}

// wait returns the next Closed call, failing after timeout.
func (h *hooks) wait(t testing.TB, timeout time.Duration) closure {
	t.Helper()
	select {
	case c := <-h.ch:
		return c
	case <-time.After(timeout):
		t.Fatalf("no Hooks.Closed within %v", timeout)
		return closure{}
	}
}

func (h *hooks) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.closed)
}

// codes lists the close codes of the Closed calls so far, in order.
func (h *hooks) codes() []uint16 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]uint16, len(h.closed))
	for i, c := range h.closed {
		out[i] = c.code
	}
	return out
}

// rig is an engine behind a real loopback HTTP server whose /ws handler authenticates the
// way the service does: token from ?token= or the bearer.<JWT> subprotocol.
type rig struct {
	t       testing.TB
	eng     *Engine
	srv     *httptest.Server
	hooks   *hooks
	metrics *telemetry.Metrics
	minter  *auth.Minter
	url     string

	handlers sync.WaitGroup // /ws handlers: a hijacked one outlives httptest's Close
	mu       sync.Mutex
	accepted int // successful Accept calls; each must end in exactly one Hooks.Closed
}

type rigOption func(*session.Options)

func newRig(t testing.TB, opts ...rigOption) *rig {
	t.Helper()
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	minter, err := auth.NewMinter("HS256", testSecret, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	h := newHooks(t)
	m := telemetry.New()
	o := session.Options{
		Shards:            4,
		HeartbeatInterval: 30 * time.Second,
		ConnectionTimeout: 60 * time.Second,
		MaxMessageSize:    64 << 10,
		SendQueueLimit:    1 << 20,
		Policy:            session.NewPolicy(v),
		Hooks:             h,
		Metrics:           m,
	}
	for _, f := range opts {
		f(&o)
	}
	eng, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, eng: eng, hooks: h, metrics: m, minter: minter}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.handlers.Add(1)
		defer r.handlers.Done()
		started := time.Now()
		token := req.URL.Query().Get("token")
		offered := map[string]bool{}
		for _, p := range strings.Split(req.Header.Get("Sec-WebSocket-Protocol"), ",") {
			p = strings.TrimSpace(p)
			offered[p] = true
			if strings.HasPrefix(p, session.BearerPrefix) {
				token = strings.TrimPrefix(p, session.BearerPrefix)
			}
		}
		sub := session.Select(func(p string) bool { return offered[p] })
		claims, err := v.Verify(token)
		if err != nil {
			code := message.CodeAuthFailed
			if errors.Is(err, auth.ErrExpired) {
				code = message.CodeTokenExpired
			}
			eng.Reject(w, req, sub, code, message.ClosePolicyViolation)
			return
		}
		a := session.Admission{
			Identity:    session.Identity{User: claims.Subject, Groups: claims.Groups},
			Expires:     claims.ExpiresAt,
			Subprotocol: sub,
			Started:     started,
		}
		if err := eng.Accept(w, req, a); err != nil {
			t.Logf("accept: %v", err)
			return
		}
		r.mu.Lock()
		r.accepted++
		r.mu.Unlock()
	}))
	r.url = "ws" + strings.TrimPrefix(r.srv.URL, "http") + "/ws"
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.srv.Close()
	r.handlers.Wait()
	if err := r.eng.Close(); err != nil {
		r.t.Errorf("engine close: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.hooks.count(); n != r.accepted {
		r.t.Errorf("%d connections accepted, Hooks.Closed called %d times", r.accepted, n)
	}
	if n := r.metrics.ConnectionsActive.Get(); n != 0 {
		r.t.Errorf("websocket_connections_active = %v after Close", n)
	}
}

func (r *rig) token(user string, groups []string, ttl time.Duration) string {
	r.t.Helper()
	tok, err := r.minter.Mint(user, groups, ttl)
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

func (r *rig) wsURL(token string) string { return r.url + "?token=" + token }

func (r *rig) deliver(kind registry.Kind, id, payload string) {
	r.eng.Deliver([]registry.Delivery{{Target: registry.Target{Kind: kind, ID: id}, Payload: []byte(payload)}})
}

// waitConns waits until the engine holds n connections. (Accept registers a connection before
// the client sees its 101, so a dial that has returned is already counted; the wait is a
// check.)
func (r *rig) waitConns(n int) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		total := 0
		for _, s := range r.eng.shards {
			total += int(s.n.Load())
		}
		if total == n {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.t.Fatalf("engine never reached %d connections", n)
}

// frame is one message a test client received.
type frame struct {
	op   gws.Opcode
	data []byte
}

// gwsClient is a gws client that records what it receives.
type gwsClient struct {
	socket *gws.Conn
	msgs   chan frame
	pings  chan []byte
	pongs  chan []byte
	done   chan struct{}
	code   uint16 // valid after done
	// noPong makes the client ignore pings, so only its own traffic keeps it alive.
	noPong bool
}

func (c *gwsClient) OnOpen(*gws.Conn) {}
func (c *gwsClient) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.code = ce.Code
	} else {
		c.code = message.CloseAbnormal
	}
	close(c.done)
}
func (c *gwsClient) OnPing(s *gws.Conn, p []byte) {
	c.pings <- append([]byte(nil), p...)
	if !c.noPong {
		_ = s.WritePong(p)
	}
}
func (c *gwsClient) OnPong(_ *gws.Conn, p []byte) { c.pongs <- append([]byte(nil), p...) }
func (c *gwsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	c.msgs <- frame{op: m.Opcode, data: append([]byte(nil), m.Bytes()...)}
	_ = m.Close()
}

func dialGWS(t testing.TB, url string, header http.Header) *gwsClient {
	t.Helper()
	c := &gwsClient{msgs: make(chan frame, 4096), pings: make(chan []byte, 64), pongs: make(chan []byte, 64), done: make(chan struct{})}
	socket, _, err := gws.NewClient(c, &gws.ClientOption{Addr: url, RequestHeader: header})
	if err != nil {
		t.Fatalf("dial %s: %v", redact(url), err)
	}
	c.socket = socket
	go socket.ReadLoop()
	t.Cleanup(func() {
		_ = socket.WriteClose(1000, nil)
		<-c.done
	})
	return c
}

func (c *gwsClient) next(t testing.TB) frame {
	t.Helper()
	select {
	case f := <-c.msgs:
		return f
	case <-c.done:
		select { // a message that arrived just before the close is still the answer
		case f := <-c.msgs:
			return f
		default:
		}
		t.Fatalf("connection closed (%d) while waiting for a message", c.code)
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return frame{}
}

func (c *gwsClient) waitClosed(t testing.TB, timeout time.Duration) uint16 {
	t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(timeout):
		t.Fatalf("connection not closed within %v", timeout)
		return 0
	}
}

func dialCoder(t testing.TB, url string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatalf("dial %s: %v", redact(url), err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func readCoder(t testing.TB, c *websocket.Conn) (websocket.MessageType, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Read(ctx)
}

func redact(url string) string {
	if i := strings.Index(url, "token="); i >= 0 {
		return url[:i] + "token=REDACTED"
	}
	return url
}

// rawClient is a WebSocket client written against the socket, for what the libraries will not
// do: never read, send reserved opcodes, vanish without a close frame.
type rawClient struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, r *rig, token string, readBuffer int) *rawClient {
	t.Helper()
	return dialRawProto(t, r, token, readBuffer, "")
}

// dialRawProto is dialRaw offering subprotocol proto (none when empty).
func dialRawProto(t testing.TB, r *rig, token string, readBuffer int, proto string) *rawClient {
	t.Helper()
	d := net.Dialer{}
	if readBuffer > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			if cerr := rc.Control(func(fd uintptr) { err = setRecvBuffer(fd, readBuffer) }); cerr != nil {
				return cerr
			}
			return err
		}
	}
	nc, err := d.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req := "GET /ws?token=" + token + " HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\n"
	if proto != "" {
		req += "Sec-WebSocket-Protocol: " + proto + "\r\n"
	}
	req += "\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	return &rawClient{Conn: nc, br: br}
}

// send writes one masked frame.
func (c *rawClient) send(t testing.TB, b0 byte, payload []byte) {
	t.Helper()
	hdr := appendHeader(nil, b0, uint64(len(payload)), 0x80)
	mask := []byte{1, 2, 3, 4}
	out := append(hdr, mask...)
	for i, b := range payload {
		out = append(out, b^mask[i%4])
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
}

// appendHeader appends the first byte b0 and the length n of a frame header, maskBit (0x80 or
// 0) set in the length code; the mask key is the caller's.
func appendHeader(dst []byte, b0 byte, n uint64, maskBit byte) []byte {
	dst = append(dst, b0)
	switch {
	case n < 126:
		return append(dst, maskBit|byte(n))
	case n <= 0xffff:
		return append(dst, maskBit|126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, maskBit|127), n)
	}
}

// readFrame reads one unmasked server frame.
func (c *rawClient) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(b[:]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// readUntilClose reads frames until a close frame and returns its code.
func (c *rawClient) readUntilClose(t testing.TB, timeout time.Duration) (code uint16, before [][]byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	for {
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("reading until a close frame: %v", err)
		}
		switch op {
		case 0x8:
			if len(p) < 2 {
				return message.CloseNoStatus, before
			}
			return binary.BigEndian.Uint16(p), before
		case 0x1, 0x2:
			before = append(before, p)
		}
	}
}

func errorCode(t testing.TB, p []byte) string {
	t.Helper()
	var e struct{ Type, Code string }
	if err := json.Unmarshal(p, &e); err != nil || e.Type != message.TypeError {
		t.Fatalf("not an ErrorMessage: %q", p)
	}
	return e.Code
}

// expectErrorThenClose reads an ErrorMessage with code, then a close frame with closeCode.
func expectErrorThenClose(t testing.TB, c *websocket.Conn, code string, closeCode uint16) {
	t.Helper()
	typ, p, err := readCoder(t, c)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("read = %v %q %v, want the %s ErrorMessage", typ, p, err, code)
	}
	if got := errorCode(t, p); got != code {
		t.Errorf("error code %s, want %s", got, code)
	}
	_, _, err = readCoder(t, c)
	if got := websocket.CloseStatus(err); got != websocket.StatusCode(closeCode) {
		t.Fatalf("close = %v (%v), want %d", got, err, closeCode)
	}
}
