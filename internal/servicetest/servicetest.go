// Package servicetest starts the whole service in-process on a loopback port, over either
// engine and either backplane, for end-to-end tests. It goes through package app, exactly as
// the binary does, and offers a gws-based client that records what a browser would see:
// messages in order and the close code.
package servicetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/app"
	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/registry"
)

// PublishKey is the PUBLISH_API_KEY every test service runs with.
const PublishKey = "test-publish-key"

// Origin is an allowed browser origin of every test service.
const Origin = "http://localhost:3000"

// Engines lists the engines the end-to-end suite runs over.
func Engines() []string {
	if runtime.GOOS == "linux" {
		return []string{config.EngineGWS, config.EngineEpoll}
	}
	return []string{config.EngineGWS}
}

// Backplanes a suite runs over: the embedded one, and Redis (a redis-server per test).
const (
	Embedded = "embedded"
	Redis    = "redis"
)

// EachEngineAndBackplane runs f as a parallel subtest for every engine and both backplanes.
func EachEngineAndBackplane(t *testing.T, f func(t *testing.T, engine, backplane string)) {
	t.Helper()
	for _, e := range Engines() {
		for _, bp := range []string{Embedded, Redis} {
			t.Run(e+"/"+bp, func(t *testing.T) {
				t.Parallel()
				f(t, e, bp)
			})
		}
	}
}

// Options choose the service under test.
type Options struct {
	Engine   string
	RedisURL string            // empty: the embedded backplane
	Cluster  bool              // RedisURL lists a Redis Cluster
	Env      map[string]string // extra variables, names without the WEBSOCKET_SERVICE_ prefix
}

// Service is a running node.
type Service struct {
	App    *app.App
	Config config.Config
	Addr   string // 127.0.0.1:port
	URL    string // http://127.0.0.1:port
	WSURL  string // ws://127.0.0.1:port/ws
	Secret string
	minter *auth.Minter
	served chan error
	down   bool
}

// Start runs a node and stops it when the test ends.
func Start(t testing.TB, o Options) *Service {
	t.Helper()
	secret := randomHex(32)
	vars := map[string]string{
		"ENGINE":                 o.Engine,
		"JWT_SECRET_KEY":         secret,
		"ALLOWED_ORIGINS":        Origin,
		"PUBLISH_API_KEY":        PublishKey,
		"SHUTDOWN_DRAIN_TIMEOUT": "1",
		"LOG_LEVEL":              "WARNING",
		"HOST":                   "127.0.0.1",
	}
	if o.RedisURL != "" {
		vars["REDIS_URL"] = o.RedisURL
		if o.Cluster {
			vars["REDIS_CLUSTER"] = "true"
		}
	}
	for k, v := range o.Env {
		vars[k] = v
	}
	full := map[string]string{}
	for k, v := range vars {
		full[config.Prefix+k] = v
	}
	cfg, err := config.FromMap(full)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	level := slog.LevelWarn
	if os.Getenv("SERVICETEST_LOG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})).With("engine", cfg.Engine)
	node, err := app.New(cfg, log)
	if err != nil {
		t.Fatalf("servicetest: build service: %v", err)
	}
	if err := node.Start(context.Background()); err != nil {
		t.Fatalf("servicetest: start: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("servicetest: listen: %v", err)
	}
	minter, err := auth.NewMinter(cfg.JWTAlgorithm, []byte(secret), cfg.JWTIssuer, cfg.JWTAudience, cfg.JWTGroupsClaim)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	s := &Service{
		App: node, Config: cfg, Addr: ln.Addr().String(), Secret: secret, minter: minter,
		served: make(chan error, 1),
	}
	s.URL = "http://" + s.Addr
	s.WSURL = "ws://" + s.Addr + "/ws"
	go func() { s.served <- node.Serve(ln) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop drains and stops the node (idempotent).
func (s *Service) Stop() {
	if s.down {
		return
	}
	s.down = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.App.Shutdown(ctx)
	<-s.served
}

// Token mints a valid token for sub with groups, valid for an hour.
func (s *Service) Token(t testing.TB, sub string, groups ...string) string {
	t.Helper()
	return s.TokenTTL(t, time.Hour, sub, groups...)
}

// TokenTTL mints a token valid for ttl.
func (s *Service) TokenTTL(t testing.TB, ttl time.Duration, sub string, groups ...string) string {
	t.Helper()
	tok, err := s.minter.Mint(sub, groups, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// DialURL is the /ws URL carrying token.
func (s *Service) DialURL(token string) string { return s.WSURL + "?token=" + token }

// Publish publishes through the node's backplane (Redis or embedded), as the publish API
// does: appended to the stream's history with a position.
func (s *Service) Publish(t testing.TB, target registry.Target, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.App.Server().Publish(ctx, target, []byte(payload)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// Metric returns the value of the exposition line that starts with series (name plus
// labels, e.g. `websocket_disconnects_total{code="1008"}`), or 0 when absent.
func (s *Service) Metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}

// WaitMetric polls until series reaches want or the timeout passes.
func (s *Service) WaitMetric(t testing.TB, series string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Metric(t, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s = %v, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Get performs a GET against the node and returns status and body.
func (s *Service) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(s.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// testWriter sends the service's logs to the test log, so they show only for failing tests.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
