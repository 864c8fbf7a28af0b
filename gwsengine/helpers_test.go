package gwsengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/wsraw"
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
	testenv.Eventually(r.t, 5*time.Second, fmt.Sprintf("the engine holds %d connections", n), func() bool {
		total := 0
		for _, s := range r.eng.shards {
			total += int(s.n.Load())
		}
		return total == n
	})
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

// rawClient is the raw WebSocket client (internal/wsraw), for what the libraries will not do:
// never read, send reserved opcodes, vanish without a close frame.
type rawClient struct {
	*wsraw.Conn
	br io.Reader // reads through the client's buffer
}

func dialRaw(t testing.TB, r *rig, token string, readBuffer int) *rawClient {
	t.Helper()
	return dialRawProto(t, r, token, readBuffer, "")
}

// dialRawProto is dialRaw offering subprotocol proto (none when empty).
func dialRawProto(t testing.TB, r *rig, token string, readBuffer int, proto string) *rawClient {
	t.Helper()
	o := wsraw.Options{ReceiveBuffer: readBuffer}
	if proto != "" {
		o.Header = http.Header{"Sec-Websocket-Protocol": {proto}}
	}
	c, err := wsraw.Dial(r.srv.Listener.Addr().String(), "/ws?token="+token, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if c.Response.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", c.Response.Status)
	}
	return &rawClient{Conn: c, br: c}
}

// send writes one masked frame whose first byte is b0 (FIN, RSV bits, opcode).
func (c *rawClient) send(t testing.TB, b0 byte, payload []byte) {
	t.Helper()
	f := wsraw.Frame{Op: b0 & rfc6455.OpBits, RSV: (b0 & rfc6455.RSVBits) >> 4, More: b0&rfc6455.FinBit == 0, Payload: payload}
	if err := c.Send(f); err != nil {
		t.Fatal(err)
	}
}

// readFrame reads one unmasked server frame, within the read deadline already set.
func (c *rawClient) readFrame() (op byte, payload []byte, err error) {
	f, err := c.ReadFrame(time.Time{})
	return f.Op, f.Payload, err
}

// readUntilClose reads frames until a close frame and returns its code, and the payloads of
// the messages before it.
func (c *rawClient) readUntilClose(t testing.TB, timeout time.Duration) (code uint16, before [][]byte) {
	t.Helper()
	frames, err := c.ReadUntilClose(time.Now().Add(timeout))
	if err != nil {
		t.Fatalf("reading until a close frame: %v", err)
	}
	for _, f := range frames {
		if f.Op == rfc6455.OpText || f.Op == rfc6455.OpBinary {
			before = append(before, f.Payload)
		}
	}
	return frames[len(frames)-1].CloseCode(), before
}

func errorCode(t testing.TB, p []byte) string {
	t.Helper()
	var e struct{ Type, Code string }
	if err := json.Unmarshal(p, &e); err != nil || e.Type != message.TypeError {
		t.Fatalf("not an ErrorMessage: %q", p)
	}
	return e.Code
}
