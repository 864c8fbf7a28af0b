package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/app"
	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/server"
)

// These tests run the commands in-process with a controlled environment: t.Setenv and
// t.Chdir (to an empty directory, so no .env is read), hence no t.Parallel.

func isolate(t *testing.T, kv ...string) {
	t.Helper()
	t.Chdir(t.TempDir())
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); strings.HasPrefix(k, config.Prefix) {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(config.Prefix+kv[i], kv[i+1])
	}
}

func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// mintAndVerify runs the token command with args and verifies its output with the verifier the
// same (current) configuration builds.
func mintAndVerify(t *testing.T, args ...string) auth.Claims {
	t.Helper()
	code, stdout, stderr := runCmd(args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	v, err := app.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(stdout))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return c
}

func TestTokenCommandMintsATokenTheSameConfigurationAccepts(t *testing.T) {
	isolate(t, "JWT_SECRET_KEY", "cmd-test-secret", "JWT_GROUPS_CLAIM", "classes")
	c := mintAndVerify(t, "token", "--sub", "u1", "--groups", "a, b,,", "--ttl", "10m")
	if c.Subject != "u1" || strings.Join(c.Groups, ",") != "a,b" {
		t.Fatalf("claims %+v", c)
	}
	if d := time.Until(c.ExpiresAt); d < 9*time.Minute || d > 10*time.Minute+time.Second {
		t.Fatalf("expires in %v, want 10m", d)
	}
}

func TestTokenCommandSignsWithAPrivateKeyForAsymmetricAlgorithms(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	privPath := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	pubPath := filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	isolate(t, "JWT_ALGORITHM", "EdDSA", "JWT_PUBLIC_KEY", "@"+pubPath)

	if code, _, stderr := runCmd("token", "--sub", "u1"); code == 0 || !strings.Contains(stderr, "--private-key") {
		t.Fatalf("EdDSA without --private-key: exit %d, stderr %q", code, stderr)
	}
	if c := mintAndVerify(t, "token", "--sub", "u1", "--private-key", privPath); c.Subject != "u1" {
		t.Fatalf("claims %+v", c)
	}
}

func TestTokenCommandRequiresSub(t *testing.T) {
	isolate(t)
	if code, _, stderr := runCmd("token"); code != 2 || !strings.Contains(stderr, "--sub") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestServeRefusesInvalidConfigurationNamingEveryBadVariable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	isolate(t, "HOST", "127.0.0.1", "PORT", strconv.Itoa(port), "ENGINE", "nope", "SEND_QUEUE_LIMIT", "1", "REDIS_URL", "http://x")
	done := make(chan int, 1)
	var stderr string
	go func() {
		code, _, errText := runCmd()
		stderr = errText
		done <- code
	}()
	select {
	case code := <-done:
		if code == 0 {
			t.Fatal("serve exited 0 with an invalid configuration")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not refuse an invalid configuration")
	}
	for _, name := range []string{"ENGINE", "SEND_QUEUE_LIMIT", "REDIS_URL"} {
		if !strings.Contains(stderr, config.Prefix+name) {
			t.Errorf("stderr does not name %s%s:\n%s", config.Prefix, name, stderr)
		}
	}
}

func TestServeTakesNoArguments(t *testing.T) {
	isolate(t)
	if code, _, stderr := runCmd("serve", "extra"); code != 2 || stderr == "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestUnknownCommandExits2WithUsage(t *testing.T) {
	if code, _, stderr := runCmd("frobnicate"); code != 2 || !strings.Contains(stderr, "usage:") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	if code, stdout, _ := runCmd("help"); code != 0 || !strings.Contains(stdout, "token") || !strings.Contains(stdout, "publish") {
		t.Fatalf("help: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := runCmd("version"); code != 0 || !strings.HasPrefix(stdout, "websocket-service ") {
		t.Fatalf("version: exit %d, %q", code, stdout)
	}
}

func TestPublishNeedsExactlyOneTargetAndAPayload(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"publish", "payload"},
		{"publish", "--user", "u1"},
		{"publish", "--user", "u1", "--group", "g", "payload"},
		{"publish", "--user", "u1", "a", "b"},
	} {
		if code, _, stderr := runCmd(args...); code != 2 || !strings.Contains(stderr, "usage") {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
}

func TestPublishWithoutRedisOrAPIKeyExplainsWhatToSet(t *testing.T) {
	isolate(t, "ENVIRONMENT", "staging") // development has a default key
	code, _, stderr := runCmd("publish", "--url", "http://127.0.0.1:1", "--broadcast", "x")
	if code == 0 || !strings.Contains(stderr, "PUBLISH_API_KEY") || !strings.Contains(stderr, "REDIS_URL") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestPublishThroughTheHTTPAPISendsTheSpecBody(t *testing.T) {
	var got struct {
		auth, body string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(r.Body)
		got.auth, got.body = r.Header.Get("Authorization"), b.String()
		if r.URL.Path != "/api/publish" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"channel":"ws-group:class7","stream":"group:class7","cursor":"1.a.1.b"}` + "\n"))
	}))
	defer srv.Close()
	isolate(t, "PUBLISH_API_KEY", "k1")
	code, stdout, stderr := runCmd("publish", "--url", srv.URL, "--group", "class7", "hello there")
	if code != 0 || stdout != `{"channel":"ws-group:class7","stream":"group:class7","cursor":"1.a.1.b"}`+"\n" {
		t.Fatalf("exit %d, stdout %q: %s", code, stdout, stderr)
	}
	if got.auth != "Bearer k1" || got.body != `{"group":"class7","message":"hello there"}` {
		t.Fatalf("auth %q body %s", got.auth, got.body)
	}
	if code, _, stderr := runCmd("publish", "--url", srv.URL, "--user", "u1", `{"a":1}`); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got.body != `{"message":{"a":1},"user_id":"u1"}` {
		t.Fatalf("body %s", got.body)
	}
}

// Through Redis the CLI publishes with a position, like the API, and prints the API's reply.
func TestPublishThroughRedisStoresTheMessageInItsHistory(t *testing.T) {
	rs := redistest.Start(t)
	isolate(t, "REDIS_URL", rs.URL(), "HISTORY_SIZE", "4")
	code, stdout, stderr := runCmd("publish", "--user", "u1", `{"a":1}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var reply server.PublishResponse
	if err := json.Unmarshal([]byte(stdout), &reply); err != nil || reply.Channel != "ws:u1" || reply.Stream != "user" {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	p, err := history.ParseCursor(reply.Cursor)
	if err != nil || p.Seq != 1 {
		t.Fatalf("cursor %q: %+v %v", reply.Cursor, p, err)
	}
	h, _ := history.Keys("ws:u1")
	c := rs.Client(t)
	entries, err := c.XRange(context.Background(), h, "-", "+").Result()
	if err != nil || len(entries) != 1 || entries[0].Values["d"] != `{"a":1}` {
		t.Fatalf("history %s: %+v %v", h, entries, err)
	}
}

func TestHealthcheckExitsZeroOnlyWhenHealthzAnswers200(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	isolate(t, "HOST", "0.0.0.0", "PORT", port)
	if code, _, stderr := runCmd("healthcheck"); code != 0 {
		t.Fatalf("healthy: exit %d: %s", code, stderr)
	}
	status.Store(http.StatusServiceUnavailable)
	if code, _, _ := runCmd("healthcheck"); code == 0 {
		t.Fatal("unhealthy: exit 0")
	}
	srv.Close()
	if code, _, _ := runCmd("healthcheck"); code == 0 {
		t.Fatal("nothing listening: exit 0")
	}
}
