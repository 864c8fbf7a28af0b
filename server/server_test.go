package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// The HTTP layer with a recording engine and backplane: the order of refusals and what each
// path takes and gives back, without sockets.

type fakeEngine struct {
	mu        sync.Mutex
	accepted  []session.Admission
	rejected  []string // ErrorMessage codes
	acceptErr error
	drained   bool
	readyErr  error
}

func (e *fakeEngine) Ready() error { return e.readyErr }

func (e *fakeEngine) Accept(_ http.ResponseWriter, _ *http.Request, a session.Admission) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.acceptErr != nil {
		return e.acceptErr
	}
	e.accepted = append(e.accepted, a)
	return nil
}

func (e *fakeEngine) Reject(_ http.ResponseWriter, _ *http.Request, _, code string, closeCode uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if closeCode != 1008 {
		panic("reject with a close code other than 1008")
	}
	e.rejected = append(e.rejected, code)
}

func (e *fakeEngine) Deliver([]registry.Delivery) {}
func (e *fakeEngine) Drain(context.Context, time.Duration) error {
	e.drained = true
	return nil
}
func (e *fakeEngine) Close() error { return nil }

type fakeBackplane struct {
	mu           sync.Mutex
	refs         map[string]int
	subscribeErr error
	readyErr     error
	published    []string // channel=payload
}

func (b *fakeBackplane) Subscribe(_ context.Context, channels []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range channels {
		b.refs[c]++
	}
	return b.subscribeErr
}

func (b *fakeBackplane) Unsubscribe(channels []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range channels {
		if b.refs[c]--; b.refs[c] == 0 {
			delete(b.refs, c)
		}
	}
}

func (b *fakeBackplane) PublishSequenced(_ context.Context, channel string, payload []byte, _ string) (history.Position, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.published = append(b.published, channel+"="+string(payload))
	return history.Position{Epoch: 7, Seq: uint64(len(b.published)), Tag: 9}, nil
}

func (b *fakeBackplane) Ready() error { return b.readyErr }

type fixture struct {
	srv     *Server
	members *Members
	engine  *fakeEngine
	bp      *fakeBackplane
	minter  *auth.Minter
}

const testSecret = "server-test-secret-server-test-secret"

func newFixture(t *testing.T, kv ...string) *fixture {
	t.Helper()
	vars := map[string]string{config.Prefix + "JWT_SECRET_KEY": testSecret, config.Prefix + "PUBLISH_API_KEY": "pk", config.Prefix + "ENGINE": "gws"}
	for i := 0; i+1 < len(kv); i += 2 {
		vars[config.Prefix+kv[i]] = kv[i+1]
	}
	cfg, err := config.FromMap(vars)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := auth.NewMinter("HS256", []byte(testSecret), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{engine: &fakeEngine{}, bp: &fakeBackplane{refs: map[string]int{}}, minter: m}
	metrics, log := telemetry.New(), slog.New(slog.NewTextHandler(io.Discard, nil))
	topics := registry.Topics{UserPrefix: cfg.UserChannelPrefix, GroupPrefix: cfg.GroupChannelPrefix, Broadcast: cfg.BroadcastChannel}
	f.members = NewMembers(topics, registry.NewLimits(cfg.MaxConnections, cfg.MaxConnectionsPerUser), f.bp, metrics, log)
	f.srv = New(Options{Config: cfg, Verifier: v, Metrics: metrics, Logger: log, Members: f.members, Backplane: f.bp, Engine: f.engine})
	return f
}

func (f *fixture) token(t *testing.T, sub string, ttl time.Duration, groups ...string) string {
	t.Helper()
	tok, err := f.minter.Mint(sub, groups, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// upgrade sends an upgrade request for token with origin (none when empty).
func (f *fixture) upgrade(token, origin, remote string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/ws?token="+token, nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	if remote != "" {
		r.RemoteAddr = remote
	}
	w := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(w, r)
	return w
}

func TestAdmittedUpgradeSubscribesEveryChannelBeforeAccept(t *testing.T) {
	f := newFixture(t)
	f.upgrade(f.token(t, "u1", time.Hour, "g1", "g2"), "", "")
	if len(f.engine.accepted) != 1 {
		t.Fatalf("accepted %d", len(f.engine.accepted))
	}
	a := f.engine.accepted[0]
	if a.Identity.User != "u1" || strings.Join(a.Identity.Groups, ",") != "g1,g2" || time.Until(a.Expires) < 59*time.Minute {
		t.Fatalf("admission %+v", a)
	}
	for _, ch := range []string{"ws:u1", "ws-group:g1", "ws-group:g2", "ws-broadcast"} {
		if f.bp.refs[ch] != 1 {
			t.Errorf("channel %s has %d references", ch, f.bp.refs[ch])
		}
	}
}

func TestClosedReleasesSubscriptionsAndLimitSlots(t *testing.T) {
	f := newFixture(t, "MAX_CONNECTIONS_PER_USER", "1", "MAX_CONNECTIONS", "1")
	f.upgrade(f.token(t, "u1", time.Hour, "g"), "", "")
	id := f.engine.accepted[0].Identity
	f.members.Closed(&id, 1000)
	if len(f.bp.refs) != 0 {
		t.Fatalf("references left after Closed: %v", f.bp.refs)
	}
	if f.srv.limits.Total() != 0 || f.srv.limits.User("u1") != 0 {
		t.Fatalf("limit slots left: node %d user %d", f.srv.limits.Total(), f.srv.limits.User("u1"))
	}
	f.upgrade(f.token(t, "u1", time.Hour), "", "")
	if len(f.engine.accepted) != 2 {
		t.Fatal("the freed slots were not reusable")
	}
}

// A token refresh's added groups are subscribed off the engine's goroutine and done is called
// even when the backplane does not confirm them; the references stay until Leave.
func TestJoinSubscribesAddedGroupsAndLeaveDropsThem(t *testing.T) {
	f := newFixture(t)
	join := func() {
		t.Helper()
		done := make(chan struct{})
		f.members.Join([]string{"g1", "g2"}, func() { close(done) })
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Join did not call done")
		}
	}
	join()
	f.bp.subscribeErr = errors.New("redis unavailable")
	join()
	// done is called after Subscribe returned: the references are taken.
	if got := fmt.Sprint(f.bp.refs); got != "map[ws-group:g1:2 ws-group:g2:2]" {
		t.Fatalf("after two joins: refs %s", got)
	}
	f.members.Leave([]string{"g1", "g2"})
	f.members.Leave([]string{"g1", "g2"})
	f.members.Leave(nil)
	if len(f.bp.refs) != 0 {
		t.Fatalf("references left after Leave: %v", f.bp.refs)
	}
}

func TestRefusedTokensAreRejectedWithTheirCodeAndTakeNothing(t *testing.T) {
	f := newFixture(t, "MAX_CONNECTIONS", "1")
	f.upgrade("", "", "")
	f.upgrade("garbage", "", "")
	f.upgrade(f.token(t, "u1", -time.Minute), "", "")
	if got := strings.Join(f.engine.rejected, ","); got != "AUTH_FAILED,AUTH_FAILED,TOKEN_EXPIRED" {
		t.Fatalf("rejections %s", got)
	}
	if len(f.bp.refs) != 0 || f.srv.limits.Total() != 0 {
		t.Fatalf("a refused upgrade kept refs %v / node slots %d", f.bp.refs, f.srv.limits.Total())
	}
}

func TestPerUserLimitRejectsWithConnectionLimitAndGivesTheNodeSlotBack(t *testing.T) {
	f := newFixture(t, "MAX_CONNECTIONS_PER_USER", "1")
	f.upgrade(f.token(t, "u1", time.Hour), "", "")
	f.upgrade(f.token(t, "u1", time.Hour), "", "")
	if strings.Join(f.engine.rejected, ",") != "CONNECTION_LIMIT" || f.srv.limits.Total() != 1 {
		t.Fatalf("rejections %v, node slots %d", f.engine.rejected, f.srv.limits.Total())
	}
	if f.bp.refs["ws:u1"] != 1 {
		t.Fatalf("ws:u1 has %d references", f.bp.refs["ws:u1"])
	}
}

func TestSubscribeFailureRefuses503AndGivesEverythingBack(t *testing.T) {
	f := newFixture(t)
	f.bp.subscribeErr = errors.New("redis unavailable")
	w := f.upgrade(f.token(t, "u1", time.Hour, "g"), "", "")
	if w.Code != http.StatusServiceUnavailable || len(f.engine.accepted) != 0 {
		t.Fatalf("status %d, accepted %d", w.Code, len(f.engine.accepted))
	}
	if w.Header().Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if len(f.bp.refs) != 0 || f.srv.limits.Total() != 0 || f.srv.limits.User("u1") != 0 {
		t.Fatalf("kept refs %v, node %d, user %d", f.bp.refs, f.srv.limits.Total(), f.srv.limits.User("u1"))
	}
	var buf bytes.Buffer
	f.srv.metrics.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), `websocket_connections_total{result="backplane_unavailable"} 1`) {
		t.Fatal("the refused upgrade was not counted as backplane_unavailable")
	}
}

func TestAcceptFailureGivesEverythingBack(t *testing.T) {
	f := newFixture(t)
	f.engine.acceptErr = errors.New("bad handshake")
	f.upgrade(f.token(t, "u1", time.Hour), "", "")
	if len(f.bp.refs) != 0 || f.srv.limits.Total() != 0 || f.srv.limits.User("u1") != 0 {
		t.Fatalf("kept refs %v, node %d, user %d", f.bp.refs, f.srv.limits.Total(), f.srv.limits.User("u1"))
	}
}

func TestRefusalsBeforeTheUpgradeComeInOrder(t *testing.T) {
	f := newFixture(t, "MAX_CONNECTIONS", "1", "HANDSHAKE_RATE_PER_IP", "1")
	tok := f.token(t, "u1", time.Hour)
	if w := f.upgrade(tok, "https://evil.example", "10.0.0.1:1"); w.Code != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", w.Code)
	}
	// The origin refusal did not spend the address's handshake budget.
	if w := f.upgrade(tok, "", "10.0.0.1:1"); w.Code != http.StatusOK || len(f.engine.accepted) != 1 {
		t.Fatalf("first handshake: %d, accepted %d", w.Code, len(f.engine.accepted))
	}
	if w := f.upgrade(tok, "", "10.0.0.1:1"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("second handshake from the same address: %d, want 429", w.Code)
	}
	if w := f.upgrade(tok, "", "10.0.0.2:1"); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("node full: %d, want 503", w.Code)
	}
}

func TestNonUpgradeRequestIs400(t *testing.T) {
	f := newFixture(t)
	w := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ws", nil))
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d", w.Code)
	}
}

func get(f *fixture, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

func TestReadyzReportsBackplaneEngineAndDraining(t *testing.T) {
	f := newFixture(t)
	if w := get(f, "/readyz"); w.Code != 200 {
		t.Fatalf("ready: %d %s", w.Code, w.Body)
	}
	f.bp.readyErr = errors.New("connection refused")
	if w := get(f, "/readyz"); w.Code != 503 || !strings.Contains(w.Body.String(), `"reason":"backplane: connection refused"`) {
		t.Fatalf("backplane down: %d %s", w.Code, w.Body)
	}
	f.bp.readyErr = nil
	f.engine.readyErr = errors.New("shard 1 failed: wait")
	if w := get(f, "/readyz"); w.Code != 503 || !strings.Contains(w.Body.String(), `"reason":"engine: shard 1 failed: wait"`) {
		t.Fatalf("engine failed: %d %s", w.Code, w.Body)
	}
	f.engine.readyErr = nil
	if err := f.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := get(f, "/readyz"); w.Code != 503 || !strings.Contains(w.Body.String(), `"reason":"draining"`) {
		t.Fatalf("draining: %d %s", w.Code, w.Body)
	}
	if w := get(f, "/healthz"); w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok"}` {
		t.Fatalf("healthz while draining: %d %s", w.Code, w.Body)
	}
	if w := f.upgrade(f.token(t, "u1", time.Hour), "", ""); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("upgrade while draining: %d", w.Code)
	}
	if !f.engine.drained {
		t.Fatal("Shutdown did not drain the engine")
	}
}

func publish(f *fixture, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/publish", strings.NewReader(body))
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(w, r)
	return w
}

func TestPublishMapsTargetsToChannelsAndUnquotesStrings(t *testing.T) {
	f := newFixture(t)
	for i, tc := range []struct{ body, reply string }{
		{`{"user_id":"u1","message":{"a": 1}}`, `{"channel":"ws:u1","stream":"user","cursor":"1.7.1.9"}`},
		{`{"group":"g","message":"text \"quoted\""}`, `{"channel":"ws-group:g","stream":"group:g","cursor":"1.7.2.9"}`},
		{`{"broadcast":true,"message":[1, 2]}`, `{"channel":"ws-broadcast","stream":"broadcast","cursor":"1.7.3.9"}`},
	} {
		w := publish(f, "pk", tc.body)
		if w.Code != http.StatusAccepted || strings.TrimSpace(w.Body.String()) != tc.reply {
			t.Fatalf("%d %s: %d %s, want 202 %s", i, tc.body, w.Code, w.Body, tc.reply)
		}
	}
	want := []string{`ws:u1={"a": 1}`, `ws-group:g=text "quoted"`, `ws-broadcast=[1, 2]`}
	if strings.Join(f.bp.published, "|") != strings.Join(want, "|") {
		t.Fatalf("published %q, want %q", f.bp.published, want)
	}
}

func TestPublishRefusesOversizeBodiesWith413(t *testing.T) {
	f := newFixture(t)
	body := `{"broadcast":true,"message":"` + strings.Repeat("x", maxPublishBody) + `"}`
	if w := publish(f, "pk", body); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", w.Code)
	}
}

func TestPublishErrorsDoNotEchoTheKey(t *testing.T) {
	f := newFixture(t)
	w := publish(f, "pk-wrong-secret-value", `{}`)
	if w.Code != http.StatusUnauthorized || bytes.Contains(w.Body.Bytes(), []byte("pk-wrong-secret-value")) {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
