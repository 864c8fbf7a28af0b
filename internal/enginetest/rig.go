// Package enginetest runs one engine (server.Engine) behind a loopback HTTP server that
// authenticates upgrades the way the service does, and records what the engine reports: it is
// the rig of the engine contract suite, which runs the same tests over the epoll engine
// (package eventloop) and the gws engine (package gwsengine). The package imports neither
// engine; a test hands it the constructor.
package enginetest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// Wait bounds every wait for something an engine does promptly.
const Wait = 5 * time.Second

var secret = []byte("enginetest-secret-0123456789abcdefghij")

// Kind is an engine under test.
type Kind struct {
	Name      string
	New       func(session.Options) (server.Engine, error)
	ErrClosed error // what Accept returns once the engine drains or is closed
	// SlowDrops is how many messages a slow consumer's close counts dropped
	// (websocket_messages_dropped_total{reason="slow_consumer"}); 0: any positive number, as
	// on an engine that counts the whole queue it discards.
	SlowDrops int
}

// Rig is one engine behind a loopback HTTP server.
type Rig struct {
	Engine  server.Engine
	Kind    Kind
	Hooks   *Recorder
	Metrics *telemetry.Metrics
	Addr    string // host:port
	URL     string // ws://host:port/ws

	t        testing.TB
	srv      *httptest.Server
	minter   *auth.Minter
	handlers sync.WaitGroup // /ws handlers: a hijacked one outlives httptest's Close
	accepted atomic.Int64   // successful Accept calls; each must end in exactly one Closed
}

// New starts engine k with test options (2 shards, quiet heartbeat, 64 KiB messages, 1 MiB
// send queue) changed by tune, and stops it when the test ends, checking then that every
// accepted connection was reported closed exactly once and none is counted active.
func New(t testing.TB, k Kind, tune func(*session.Options)) *Rig {
	t.Helper()
	verifier, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	minter, err := auth.NewMinter("HS256", secret, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := &Rig{Kind: k, Hooks: NewRecorder(t), Metrics: telemetry.New(), t: t, minter: minter}
	opts := session.Options{
		Shards:            2,
		HeartbeatInterval: 30 * time.Second,
		ConnectionTimeout: 60 * time.Second,
		MaxMessageSize:    65536,
		SendQueueLimit:    1 << 20,
		Policy:            session.NewPolicy(verifier),
		Hooks:             r.Hooks,
		Metrics:           r.Metrics,
	}
	if tune != nil {
		tune(&opts)
	}
	if r.Engine, err = k.New(opts); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.handlers.Add(1)
		defer r.handlers.Done()
		r.serve(w, req, verifier)
	}))
	r.Addr = r.srv.Listener.Addr().String()
	r.URL = "ws://" + r.Addr + "/ws"
	t.Cleanup(r.stop)
	return r
}

// serve authenticates like the service: the token from ?token= or the bearer.<JWT>
// subprotocol; a bad one is Rejected with AUTH_FAILED (TOKEN_EXPIRED when expired) and 1008.
func (r *Rig) serve(w http.ResponseWriter, req *http.Request, v *auth.Verifier) {
	started := time.Now()
	token := req.URL.Query().Get("token")
	offered := map[string]bool{}
	for _, h := range req.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			p = strings.TrimSpace(p)
			offered[p] = true
			if tok, ok := strings.CutPrefix(p, session.BearerPrefix); ok {
				token = tok
			}
		}
	}
	sub := session.Select(func(p string) bool { return offered[p] })
	claims, err := v.Verify(token)
	if err != nil {
		code := message.CodeAuthFailed
		if errors.Is(err, auth.ErrExpired) {
			code = message.CodeTokenExpired
		}
		r.Engine.Reject(w, req, sub, code, message.ClosePolicyViolation)
		return
	}
	a := session.Admission{
		Identity:    session.Identity{User: claims.Subject, Groups: claims.Groups},
		Expires:     claims.ExpiresAt,
		Subprotocol: sub,
		Started:     started,
	}
	if err := r.Engine.Accept(w, req, a); err == nil {
		r.accepted.Add(1)
	}
}

func (r *Rig) stop() {
	r.srv.Close()
	r.handlers.Wait()
	if err := r.Engine.Close(); err != nil {
		r.t.Errorf("engine close: %v", err)
	}
	// Close has ended every connection and every timer: no Closed call can follow.
	if n, want := len(r.Hooks.Calls()), r.accepted.Load(); int64(n) != want {
		r.t.Errorf("%d connections accepted, Hooks.Closed called %d times", want, n)
	}
	if n := r.Metrics.ConnectionsActive.Get(); n != 0 {
		r.t.Errorf("websocket_connections_active = %v after Close", n)
	}
}

// Token mints a token for user with groups, valid for ttl.
func (r *Rig) Token(user string, ttl time.Duration, groups ...string) string {
	r.t.Helper()
	tok, err := r.minter.Mint(user, groups, ttl)
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

// DialURL is the upgrade URL carrying token.
func (r *Rig) DialURL(token string) string { return r.URL + "?token=" + token }

// UserURL is the upgrade URL for user with groups, with an hour's token.
func (r *Rig) UserURL(user string, groups ...string) string {
	return r.DialURL(r.Token(user, time.Hour, groups...))
}

// Deliver hands the engine one payload for target.
func (r *Rig) Deliver(kind registry.Kind, id, payload string) {
	r.Engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: kind, ID: id}, Payload: []byte(payload)}})
}

// Accepted is the number of successful Accept calls so far.
func (r *Rig) Accepted() int { return int(r.accepted.Load()) }

// WaitAccepted waits until n upgrades were accepted (Accept has returned for each).
func (r *Rig) WaitAccepted(t testing.TB, n int) {
	t.Helper()
	testenv.Eventually(t, Wait, fmt.Sprintf("%d accepted connections", n), func() bool { return r.Accepted() >= n })
}

// Exposition is the metrics' Prometheus text.
func (r *Rig) Exposition() string {
	var b bytes.Buffer
	r.Metrics.WritePrometheus(&b)
	return b.String()
}

// Dropped is websocket_messages_dropped_total for reason (-1 when absent).
func (r *Rig) Dropped(reason string) int {
	prefix := fmt.Sprintf(`websocket_messages_dropped_total{reason=%q} `, reason)
	for line := range strings.SplitSeq(r.Exposition(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n int
			_, _ = fmt.Sscan(v, &n)
			return n
		}
	}
	return -1
}
