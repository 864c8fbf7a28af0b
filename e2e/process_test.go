package e2e_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/app"
	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

// docs/OPERATIONS.md "Lifecycle" and the cmd/websocket-service tools, tested on the real binary.

const testSecret = "e2e-secret-0123456789abcdef0123456789"

// prefixed turns NAME=value pairs into WEBSOCKET_SERVICE_NAME=value environment entries.
func prefixed(kv ...string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, config.Prefix+kv[i]+"="+kv[i+1])
	}
	return out
}

// mint signs a token with secret as the default HS256 configuration expects.
func mint(t *testing.T, secret, sub string, groups ...string) string {
	t.Helper()
	m, err := auth.NewMinter("HS256", []byte(secret), "", "", "groups")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(sub, groups, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wsURL(addr, token string) string { return "ws://" + addr + "/ws?token=" + token }

// startWithClients runs the binary with a 2 s drain window and connects conns clients.
func startWithClients(t *testing.T, engine string, conns int) (*process, []*servicetest.Client) {
	t.Helper()
	port := freePort(t)
	p := startProcess(t, prefixed("HOST", "127.0.0.1", "PORT", strconv.Itoa(port), "ENGINE", engine,
		"JWT_SECRET_KEY", testSecret, "SHUTDOWN_DRAIN_TIMEOUT", "2", "LOG_LEVEL", "WARNING"), port)
	clients := make([]*servicetest.Client, conns)
	for i := range clients {
		clients[i] = servicetest.Dial(t, wsURL(p.addr, mint(t, testSecret, "u"+strconv.Itoa(i%10))))
	}
	return p, clients
}

func TestSIGTERMClosesEveryConnectionWith1001WithinTheDrainTimeoutAndExitsZero(t *testing.T) {
	const conns = 100
	const drain = 2 * time.Second
	eachEngine(t, func(t *testing.T, engine string) {
		p, clients := startWithClients(t, engine, conns)
		start := time.Now()
		p.signal(t, syscall.SIGTERM)
		for i, c := range clients {
			code, reason := c.WaitClose(t, drain+3*time.Second)
			if code != 1001 {
				t.Fatalf("client %d closed with %d (%q), want 1001", i, code, reason)
			}
		}
		last := time.Duration(0)
		for _, c := range clients {
			if d := c.ClosedAt().Sub(start); d > last {
				last = d
			}
		}
		if last > drain+time.Second {
			t.Errorf("last client closed %v after SIGTERM, drain timeout is %v", last, drain)
		}
		if code := p.waitExit(t, drain+5*time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, p.out.String())
		}
		if elapsed := time.Since(start); elapsed > drain+3*time.Second {
			t.Fatalf("exited %v after SIGTERM, drain timeout %v", elapsed, drain)
		}
	})
}

func TestSIGTERMSpreadsClosesOverTheDrainWindow(t *testing.T) {
	const conns = 20
	eachEngine(t, func(t *testing.T, engine string) {
		p, clients := startWithClients(t, engine, conns)
		start := time.Now()
		p.signal(t, syscall.SIGTERM)
		first, last := time.Duration(1<<62), time.Duration(0)
		for _, c := range clients {
			if code, _ := c.WaitClose(t, 5*time.Second); code != 1001 {
				t.Fatalf("closed with %d, want 1001", code)
			}
			d := c.ClosedAt().Sub(start)
			first, last = min(first, d), max(last, d)
		}
		// Not a stampede: the closes spread over a good part of the 2 s window.
		if last-first < 700*time.Millisecond {
			t.Fatalf("closes span only %v (first %v, last %v) of a 2 s drain window", last-first, first, last)
		}
		if code := p.waitExit(t, 7*time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	})
}

func TestMakeRunServesEchoWithNoConfigurationAtAll(t *testing.T) {
	port := freePort(t)
	// Nothing but where to listen: default secret, default engine, embedded backplane.
	p := startProcess(t, prefixed("HOST", "127.0.0.1", "PORT", strconv.Itoa(port)), port)
	c := servicetest.Dial(t, wsURL(p.addr, mint(t, config.DefaultJWTSecret, "u1")))
	c.Send(t, "hello")
	expectText(t, c, "Echo: hello")
	code, body := getURL(t, "http://"+p.addr+"/readyz")
	if code != 200 {
		t.Fatalf("/readyz %d %s with the embedded backplane", code, body)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.waitExit(t, 35*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestInvalidConfigurationExitsNonZeroBeforeListeningNamingEveryBadVariable(t *testing.T) {
	port := freePort(t)
	code, stdout, stderr := runTool(t, prefixed("HOST", "127.0.0.1", "PORT", strconv.Itoa(port),
		"ENGINE", "turbo", "MAX_MESSAGE_SIZE", "10", "LOG_LEVEL", "LOUD", "MAX_CONNECTIONS", "many",
		"WEBSOCKET_HEARTBEAT_INTERVAL", "-1"))
	if code == 0 {
		t.Fatalf("exit code 0 with an invalid configuration; stdout:\n%s", stdout)
	}
	for _, name := range []string{"ENGINE", "MAX_MESSAGE_SIZE", "LOG_LEVEL", "MAX_CONNECTIONS", "WEBSOCKET_HEARTBEAT_INTERVAL"} {
		if !strings.Contains(stderr, config.Prefix+name) {
			t.Errorf("stderr does not name %s%s:\n%s", config.Prefix, name, stderr)
		}
	}
	if strings.Contains(stdout, "listening") {
		t.Errorf("the process listened before refusing its configuration:\n%s", stdout)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("something listens on %d after the refusal", port)
	}
}

func TestProductionWithTheDefaultSecretRefusesToStart(t *testing.T) {
	port := freePort(t)
	code, _, stderr := runTool(t, prefixed("HOST", "127.0.0.1", "PORT", strconv.Itoa(port),
		"ENVIRONMENT", "production", "ALLOWED_ORIGINS", "*"))
	if code == 0 {
		t.Fatal("production started with the default secret and * origins")
	}
	for _, name := range []string{"JWT_SECRET_KEY", "ALLOWED_ORIGINS"} {
		if !strings.Contains(stderr, config.Prefix+name) {
			t.Errorf("stderr does not name %s%s:\n%s", config.Prefix, name, stderr)
		}
	}
}

func TestTokenSubcommandOutputVerifiesWithTheSameConfiguration(t *testing.T) {
	env := prefixed("JWT_SECRET_KEY", testSecret, "JWT_ISSUER", "huleedu", "JWT_AUDIENCE", "ws")
	code, stdout, stderr := runTool(t, env, "token", "--sub", "u1", "--groups", "a,b", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("token exited %d: %s", code, stderr)
	}
	tok := strings.TrimSpace(stdout)
	cfg, err := config.FromMap(map[string]string{
		config.Prefix + "JWT_SECRET_KEY": testSecret, config.Prefix + "JWT_ISSUER": "huleedu", config.Prefix + "JWT_AUDIENCE": "ws",
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := app.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if claims.Subject != "u1" || strings.Join(claims.Groups, ",") != "a,b" {
		t.Fatalf("claims %+v", claims)
	}
	if d := time.Until(claims.ExpiresAt); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Fatalf("token expires in %v, want 1h", d)
	}
	// A server with another secret refuses it.
	other, _ := config.FromMap(map[string]string{config.Prefix + "JWT_SECRET_KEY": "another-secret"})
	ov, _ := app.NewVerifier(other)
	if _, err := ov.Verify(tok); err == nil {
		t.Fatal("token verified with another secret")
	}
}

func TestTokenSubcommandRequiresSub(t *testing.T) {
	code, _, stderr := runTool(t, nil, "token", "--groups", "a")
	if code == 0 || !strings.Contains(stderr, "--sub") {
		t.Fatalf("exit %d, stderr %q; want a non-zero exit naming --sub", code, stderr)
	}
}

func TestPublishSubcommandThroughRedisReachesAConnectedClient(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		rs := redistest.Start(t)
		svc := servicetest.Start(t, servicetest.Options{Engine: engine, RedisURL: rs.URL()})
		c := dial(t, svc, "u1")
		waitActive(t, svc, 1)
		code, stdout, stderr := runTool(t, prefixed("REDIS_URL", rs.URL()), "publish", "--user", "u1", `{"type":"notification","event_type":"cli","data":{}}`)
		if code != 0 {
			t.Fatalf("publish exited %d: %s %s", code, stdout, stderr)
		}
		expectText(t, c, `{"type":"notification","event_type":"cli","data":{}}`)
	})
}

func TestPublishSubcommandThroughTheHTTPAPIReachesAConnectedClient(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		svc := servicetest.Start(t, servicetest.Options{Engine: engine})
		c := dial(t, svc, "u1", "class7")
		waitActive(t, svc, 1)
		env := prefixed("PUBLISH_API_KEY", servicetest.PublishKey)
		if code, _, stderr := runTool(t, env, "publish", "--url", svc.URL, "--user", "u1", "payload for u1"); code != 0 {
			t.Fatalf("publish --user exited %d: %s", code, stderr)
		}
		expectText(t, c, "payload for u1")
		if code, _, stderr := runTool(t, env, "publish", "--url", svc.URL, "--group", "class7", `{"k":"v"}`); code != 0 {
			t.Fatalf("publish --group exited %d: %s", code, stderr)
		}
		expectText(t, c, `{"k":"v"}`)
	})
}

func TestPublishSubcommandWithAWrongKeyFails(t *testing.T) {
	svc := servicetest.Start(t, servicetest.Options{Engine: servicetest.Engines()[0]})
	code, _, stderr := runTool(t, prefixed("PUBLISH_API_KEY", "wrong"), "publish", "--url", svc.URL, "--broadcast", "x")
	if code == 0 || !strings.Contains(stderr, "401") {
		t.Fatalf("exit %d stderr %q; want a failure reporting 401", code, stderr)
	}
}

func TestTokensNeverAppearInLogs(t *testing.T) {
	port := freePort(t)
	p := startProcess(t, prefixed("HOST", "127.0.0.1", "PORT", strconv.Itoa(port), "JWT_SECRET_KEY", testSecret,
		"LOG_LEVEL", "DEBUG", "SHUTDOWN_DRAIN_TIMEOUT", "1", "MAX_CONNECTIONS_PER_USER", "1"), port)
	good := mint(t, testSecret, "u1")
	bad := mint(t, "not-the-secret-not-the-secret-xx", "u1")
	c := servicetest.Dial(t, wsURL(p.addr, good))
	c.Send(t, `{"type":"auth","token":"`+good+`"}`)
	c.NextText(t, wait)
	expectRefusal(t, servicetest.Dial(t, wsURL(p.addr, good)), "CONNECTION_LIMIT", 1008)
	expectRefusal(t, servicetest.Dial(t, wsURL(p.addr, bad)), "AUTH_FAILED", 1008)
	expectRefusal(t, servicetest.Dial(t, "ws://"+p.addr+"/ws", servicetest.DialOptions{Subprotocols: []string{"notifications.v1", "bearer." + bad}}), "AUTH_FAILED", 1008)
	p.signal(t, syscall.SIGTERM)
	if code := p.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	logs := p.out.String()
	// The refusals were logged: the check below looks at logs that talk about them.
	if !strings.Contains(logs, "authentication failed") {
		t.Fatalf("no log line for the refused token:\n%s", logs)
	}
	for _, tok := range []string{good, bad} {
		for _, part := range strings.Split(tok, ".")[1:] {
			if strings.Contains(logs, part) {
				t.Fatalf("logs contain part of a token (%q):\n%s", part, logs)
			}
		}
	}
}

func TestBinaryReadsDotEnvAndTheRealEnvironmentWins(t *testing.T) {
	dir := t.TempDir()
	filePort, envPort := freePort(t), freePort(t)
	dotenv := strings.Join(prefixed("PORT", strconv.Itoa(filePort), "HOST", "127.0.0.1", "JWT_SECRET_KEY", "secret-from-the-dotenv-file-0123456"), "\n")
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcessIn(t, dir, prefixed("PORT", strconv.Itoa(envPort)), envPort)
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(filePort)), 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("the binary listens on the .env port %d too", filePort)
	}
	c := servicetest.Dial(t, wsURL(p.addr, mint(t, "secret-from-the-dotenv-file-0123456", "u1")))
	c.Send(t, "dotenv")
	expectText(t, c, "Echo: dotenv")
	expectRefusal(t, servicetest.Dial(t, wsURL(p.addr, mint(t, config.DefaultJWTSecret, "u1"))), "AUTH_FAILED", 1008)
}

func TestAllowedOriginsAsAJSONListIsHonoured(t *testing.T) {
	port := freePort(t)
	p := startProcess(t, prefixed("HOST", "127.0.0.1", "PORT", strconv.Itoa(port), "JWT_SECRET_KEY", testSecret,
		"ALLOWED_ORIGINS", `["https://app.example","https://admin.example:8443"]`), port)
	tok := mint(t, testSecret, "u1")
	for origin, want := range map[string]int{
		"https://app.example":        http.StatusSwitchingProtocols,
		"https://admin.example:8443": http.StatusSwitchingProtocols,
		"http://localhost:3000":      http.StatusForbidden,
		"https://evil.example":       http.StatusForbidden,
	} {
		if status, _ := rawStatus(t, p.addr, "/ws?token="+tok, http.Header{"Origin": {origin}}); status != want {
			t.Errorf("origin %s: status %d, want %d", origin, status, want)
		}
	}
}

func TestSIGINTDrainsLikeSIGTERM(t *testing.T) {
	p, clients := startWithClients(t, servicetest.Engines()[len(servicetest.Engines())-1], 3)
	p.signal(t, syscall.SIGINT)
	for _, c := range clients {
		expectClose(t, c, 1001, 5*time.Second)
	}
	if code := p.waitExit(t, 7*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
}
