//go:build linux

package eventloop

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testSecret = []byte("a-test-secret-that-is-long-enough-32b")

// closedCall is one Hooks.Closed call.
type closedCall struct {
	id   *session.Identity
	user string
	code uint16
	at   time.Time
}

// hookRecorder is a session.Hooks that writes every call down.
type hookRecorder struct {
	mu    sync.Mutex
	calls []closedCall
	ch    chan struct{}
}

func newHookRecorder() *hookRecorder { return &hookRecorder{ch: make(chan struct{}, 1)} }

func (h *hookRecorder) Closed(id *session.Identity, code uint16) {
	h.mu.Lock()
	h.calls = append(h.calls, closedCall{id: id, user: id.User, code: code, at: time.Now()})
	h.mu.Unlock()
	select {
	case h.ch <- struct{}{}:
	default:
	}
}

// Join and Leave stand for a backplane that has every channel at once.
func (h *hookRecorder) Join(_ []string, done func()) { go done() }

func (h *hookRecorder) Leave([]string) {}

func (h *hookRecorder) snapshot() []closedCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]closedCall(nil), h.calls...)
}

// waitCalls waits until at least n Closed calls happened.
func (h *hookRecorder) waitCalls(t testing.TB, n int, within time.Duration) []closedCall {
	t.Helper()
	deadline := time.After(within)
	for {
		if calls := h.snapshot(); len(calls) >= n {
			return calls
		}
		select {
		case <-h.ch:
		case <-deadline:
			t.Fatalf("got %d Closed calls, want %d: %+v", len(h.snapshot()), n, h.snapshot())
		}
	}
}

// codeFor returns the close codes reported for user.
func (h *hookRecorder) codesFor(user string) []uint16 {
	var out []uint16
	for _, c := range h.snapshot() {
		if c.user == user {
			out = append(out, c.code)
		}
	}
	return out
}

// harness is a real loopback HTTP server whose /ws handler authenticates with a real verifier
// and hands the upgrade to the engine under test.
type harness struct {
	engine  *Engine
	srv     *httptest.Server // nil when the front reads the requests
	front   *Front
	hooks   *hookRecorder
	metrics *telemetry.Metrics
	minter  *auth.Minter
	url     string // ws://host/ws
	addr    string
	accepts chan error
	logs    *logRecorder // what the engine logged
}

// logRecorder is a slog.Handler that keeps every record, with its attributes (the logger's
// own included) by key.
type logRecorder struct {
	kept  *logStore // shared with the handlers WithAttrs derives
	attrs []slog.Attr
}

type logStore struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func (r logRecord) String() string {
	s := r.level.String() + " " + strconv.Quote(r.msg)
	for _, k := range slices.Sorted(maps.Keys(r.attrs)) {
		s += " " + k + "=" + strconv.Quote(r.attrs[k].String())
	}
	return s
}

func newLogRecorder() *logRecorder { return &logRecorder{kept: &logStore{}} }

func (*logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	for _, a := range l.attrs {
		rec.attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Resolve()
		return true
	})
	l.kept.mu.Lock()
	l.kept.recs = append(l.kept.recs, rec)
	l.kept.mu.Unlock()
	return nil
}

func (l *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{kept: l.kept, attrs: append(l.attrs[:len(l.attrs):len(l.attrs)], attrs...)}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l } // the engine uses no groups

// records returns the records kept so far.
func (l *logRecorder) records() []logRecord {
	l.kept.mu.Lock()
	defer l.kept.mu.Unlock()
	return append([]logRecord(nil), l.kept.recs...)
}

func newHarness(t testing.TB, tune func(*session.Options)) *harness {
	t.Helper()
	return newFaultyHarness(t, tune, &faults{})
}

// newFaultyHarness is newHarness with an engine whose faults hooks are f (fault injection).
func newFaultyHarness(t testing.TB, tune func(*session.Options), f *faults) *harness {
	t.Helper()
	return buildHarness(t, tune, f, func(h *harness, mux *http.ServeMux) {
		h.srv = httptest.NewServer(mux)
		h.addr = h.srv.Listener.Addr().String()
		t.Cleanup(h.srv.Close)
	})
}

// newFrontHarness is newHarness with the engine's Front reading the requests (upgrades at
// /ws; net/http serves the rest of mux), heads due within headerTimeout and at most
// maxHeaderBytes long, as the service runs.
func newFrontHarness(t testing.TB, headerTimeout time.Duration, maxHeaderBytes int) *harness {
	t.Helper()
	return buildHarness(t, nil, &faults{}, func(h *harness, mux *http.ServeMux) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		front, err := h.engine.Front(ln, "/ws", mux, headerTimeout, maxHeaderBytes)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: headerTimeout, MaxHeaderBytes: maxHeaderBytes}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(front) }()
		h.front = front.(*Front)
		h.addr = ln.Addr().String()
		t.Cleanup(func() {
			_ = srv.Close()
			<-served
		})
	})
}

// buildHarness builds the engine and the /ws handler, and has serve serve them.
func buildHarness(t testing.TB, tune func(*session.Options), f *faults, serve func(*harness, *http.ServeMux)) *harness {
	t.Helper()
	verifier, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	minter, err := auth.NewMinter("HS256", testSecret, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{hooks: newHookRecorder(), metrics: telemetry.New(), minter: minter, accepts: make(chan error, 4096), logs: newLogRecorder()}
	opts := session.Options{
		Shards:            2,
		HeartbeatInterval: 30 * time.Second,
		ConnectionTimeout: 60 * time.Second,
		MaxMessageSize:    65536,
		SendQueueLimit:    1 << 20,
		Policy:            session.NewPolicy(verifier),
		Hooks:             h.hooks,
		Metrics:           h.metrics,
		Logger:            slog.New(h.logs),
	}
	if tune != nil {
		tune(&opts)
	}
	h.engine, err = newEngine(opts, f)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		token := r.URL.Query().Get("token")
		for _, p := range r.Header.Values("Sec-WebSocket-Protocol") {
			for e := range strings.SplitSeq(p, ",") {
				if tok, ok := strings.CutPrefix(strings.TrimSpace(e), session.BearerPrefix); ok {
					token = tok
				}
			}
		}
		claims, err := verifier.Verify(token)
		if err != nil {
			code := message.CodeAuthFailed
			if errors.Is(err, auth.ErrExpired) {
				code = message.CodeTokenExpired
			}
			h.engine.Reject(w, r, session.Subprotocol, code, message.ClosePolicyViolation)
			return
		}
		a := session.Admission{
			Identity:    session.Identity{User: claims.Subject, Groups: claims.Groups},
			Expires:     claims.ExpiresAt,
			Started:     started,
			Subprotocol: session.Select(func(p string) bool { return rfc6455.HeaderHasToken(r.Header, hdrProtocol, p) }),
		}
		select { // tests that want the result read it; others let it drop
		case h.accepts <- h.engine.Accept(w, r, a):
		default:
		}
	})
	mux.HandleFunc("/other", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.URL.Path)
		_, _ = w.Write(append([]byte("other "+r.Method+" "), body...))
	})
	t.Cleanup(func() { _ = h.engine.Close() })
	serve(h, mux)
	h.url = "ws://" + h.addr + "/ws"
	return h
}

// token mints a token for user with groups, valid for ttl.
func (h *harness) token(t testing.TB, user string, groups []string, ttl time.Duration) string {
	t.Helper()
	tok, err := h.minter.Mint(user, groups, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wsURL is the upgrade URL for user.
func (h *harness) wsURL(t testing.TB, user string, groups ...string) string {
	return h.url + "?token=" + h.token(t, user, groups, time.Hour)
}

// liveConns is the number of descriptors the engine's shards hold.
func (h *harness) liveConns() int64 {
	var n int64
	for _, l := range h.engine.loops {
		n += l.load.Load()
	}
	return n
}

// rawClient is the raw WebSocket client (internal/wsraw) with this package's assertions, for
// byte-exact tests: it can send anything, malformed included, and reads raw frames.
type rawClient struct {
	t    testing.TB
	conn *wsraw.Conn
	resp *http.Response
}

// dialRaw sends the upgrade request for path (query included) with extra appended in the same
// write, and reads the response head.
func dialRaw(t testing.TB, addr, path string, header http.Header, extra []byte) *rawClient {
	t.Helper()
	c, err := wsraw.Dial(addr, path, wsraw.Options{Header: header, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, resp: c.Response}
}

func (h *harness) dialRaw(t testing.TB, user string, extra []byte) *rawClient {
	t.Helper()
	rc := dialRaw(t, h.addr, "/ws?token="+h.token(t, user, nil, time.Hour), nil, extra)
	if rc.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", rc.resp.StatusCode)
	}
	return rc
}

// readFrame reads one server frame.
func (rc *rawClient) readFrame(within time.Duration) (fin bool, op byte, payload []byte, err error) {
	f, err := rc.conn.ReadFrame(time.Now().Add(within))
	return f.Fin, f.Op, f.Payload, err
}

// nextFrame reads frames, skipping pings, until one arrives; it fails the test on error.
func (rc *rawClient) nextFrame(within time.Duration) wsraw.ServerFrame {
	rc.t.Helper()
	for {
		f, err := rc.conn.ReadFrame(time.Now().Add(within))
		if err != nil {
			rc.t.Fatalf("read frame: %v", err)
		}
		if f.Op != opPing {
			return f
		}
	}
}

// expectFrame reads frames, skipping pings, until one arrives; it fails the test on error.
func (rc *rawClient) expectFrame(within time.Duration) (op byte, payload []byte) {
	rc.t.Helper()
	f := rc.nextFrame(within)
	return f.Op, f.Payload
}

// expectClose reads until a close frame and returns its code (1005 for an empty one).
func (rc *rawClient) expectClose(within time.Duration) (code uint16, before [][]byte) {
	rc.t.Helper()
	for {
		f := rc.nextFrame(within)
		if f.Op == opClose {
			return f.CloseCode(), before
		}
		before = append(before, f.Payload)
	}
}

func (rc *rawClient) send(frames ...[]byte) {
	rc.t.Helper()
	for _, f := range frames {
		if _, err := rc.conn.Write(f); err != nil {
			rc.t.Fatalf("write: %v", err)
		}
	}
}

// expectEOF waits for the server to close the TCP connection.
func (rc *rawClient) expectEOF(within time.Duration) {
	rc.t.Helper()
	_ = rc.conn.SetReadDeadline(time.Now().Add(within))
	if _, err := io.Copy(io.Discard, rc.conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			rc.t.Fatalf("server did not close the connection within %v", within)
		}
	}
}

// countFDs is the number of open descriptors of this process.
func countFDs(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
