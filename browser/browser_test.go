package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
)

// chromiumPath is Debian's chromium package; the test never downloads a browser.
const chromiumPath = "/usr/bin/chromium"

// page is what the test serves as the page the WebSockets are opened from.
const page = `<!doctype html><html><head><meta charset="utf-8"><title>websocket-service browser test</title></head>
<body><p>websocket-service browser test page</p></body></html>`

// TestChromiumTalksToBothEngines loads a page in headless Chromium and, from it, connects to
// the service over each engine with a Redis backplane: by query token and by the bearer
// subprotocol it receives a message published on Redis, gets its echo and closes cleanly; a
// bad token closes with 1008; a page from an origin not in ALLOWED_ORIGINS cannot connect.
func TestChromiumTalksToBothEngines(t *testing.T) {
	node := requireBrowserTools(t)
	redis := redistest.Start(t)

	allowed := servePage(t)
	foreign := servePage(t)
	var mu sync.Mutex // services is filled below and read by the publish handler
	services := map[string]*servicetest.Service{}
	// The allowed page asks for its message once its WebSocket is open: this handler publishes
	// it on Redis through the service's backplane, as a backend would.
	allowed.mux.HandleFunc("GET /publish", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		svc := services[r.URL.Query().Get("engine")]
		mu.Unlock()
		if svc == nil {
			http.Error(w, "unknown engine", http.StatusNotFound)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		target := registry.Target{Kind: registry.User, ID: r.URL.Query().Get("user")}
		if _, err := svc.App.Server().Publish(ctx, target, []byte(r.URL.Query().Get("payload"))); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	type run struct {
		Engine     string `json:"engine"`
		Mode       string `json:"mode"`
		PageURL    string `json:"pageURL"`
		WSURL      string `json:"wsURL"`
		Token      string `json:"token"`
		PublishURL string `json:"publishURL"`
	}
	var runs []run
	payloads := map[string]string{}
	for _, engine := range servicetest.Engines() {
		svc := servicetest.Start(t, servicetest.Options{
			Engine: engine, RedisURL: redis.URL(),
			Env: map[string]string{"ALLOWED_ORIGINS": allowed.origin},
		})
		mu.Lock()
		services[engine] = svc
		mu.Unlock()
		for _, mode := range []string{"query", "subprotocol"} {
			user := "browser-" + engine + "-" + mode
			payload := fmt.Sprintf(`{"type":"notification","event_type":"browser_test","data":{"engine":%q,"mode":%q}}`, engine, mode)
			payloads[engine+"/"+mode] = payload
			runs = append(runs, run{
				Engine: engine, Mode: mode, PageURL: allowed.url, WSURL: svc.WSURL, Token: svc.Token(t, user),
				PublishURL: "/publish?" + url.Values{"engine": {engine}, "user": {user}, "payload": {payload}}.Encode(),
			})
		}
		runs = append(runs,
			run{Engine: engine, Mode: "badToken", PageURL: allowed.url, WSURL: svc.WSURL, Token: "not-a-jwt"},
			run{Engine: engine, Mode: "foreign", PageURL: foreign.url, WSURL: svc.WSURL, Token: svc.Token(t, "foreign")},
		)
	}

	results := runChromium(t, node, runs)
	for _, r := range runs {
		key := r.Engine + "/" + r.Mode
		got, ok := results[key]
		if !ok {
			t.Errorf("%s: no result", key)
			continue
		}
		t.Logf("%s: %s", key, got.summary())
		if got.Error != "" {
			t.Errorf("%s: %s", key, got.Error)
			continue
		}
		switch r.Mode {
		case "query", "subprotocol":
			switch {
			case !got.Opened:
				t.Errorf("%s: never opened (close %v)", key, got.CloseCode)
			case got.Pushed != payloads[key]:
				t.Errorf("%s: published message %q, want %q", key, got.Pushed, payloads[key])
			case got.Echo != "Echo: hello from chromium":
				t.Errorf("%s: echo %q", key, got.Echo)
			case got.CloseCode == nil || *got.CloseCode != 1000 || !got.WasClean:
				t.Errorf("%s: close %v clean=%v, want a clean 1000", key, got.CloseCode, got.WasClean)
			}
			if r.Mode == "subprotocol" && got.Protocol != "notifications.v1" {
				t.Errorf("%s: selected protocol %q, want notifications.v1", key, got.Protocol)
			}
		case "badToken":
			if got.CloseCode == nil || *got.CloseCode != 1008 {
				t.Errorf("%s: close %v, want 1008", key, got.CloseCode)
			}
			if !strings.Contains(strings.Join(got.Messages, " "), "AUTH_FAILED") {
				t.Errorf("%s: messages %q, want an AUTH_FAILED error before the close", key, got.Messages)
			}
		case "foreign":
			if got.Opened || !got.Errored || got.CloseCode == nil || *got.CloseCode != 1006 {
				t.Errorf("%s: opened=%v errored=%v close=%v, want a failed connection (error, 1006)", key, got.Opened, got.Errored, got.CloseCode)
			}
		}
	}
	for engine, svc := range services {
		if n := svc.Metric(t, `websocket_connections_total{result="origin_rejected"}`); n != 1 {
			t.Errorf("%s: origin_rejected = %v, want 1 (the foreign page's upgrade got HTTP 403)", engine, n)
		}
	}
}

// observation is what run.mjs reports for one run.
type observation struct {
	Engine    string   `json:"engine"`
	Mode      string   `json:"mode"`
	Opened    bool     `json:"opened"`
	Errored   bool     `json:"errored"`
	Messages  []string `json:"messages"`
	Protocol  string   `json:"protocol"`
	Pushed    string   `json:"pushed"`
	Echo      string   `json:"echo"`
	CloseCode *int     `json:"closeCode"`
	WasClean  bool     `json:"wasClean"`
	Error     string   `json:"error"`
	UserAgent string   `json:"userAgent"`
}

func (o observation) summary() string {
	code := "none"
	if o.CloseCode != nil {
		code = fmt.Sprint(*o.CloseCode)
	}
	return fmt.Sprintf("opened=%v errored=%v protocol=%q messages=%d close=%s clean=%v", o.Opened, o.Errored, o.Protocol, len(o.Messages), code, o.WasClean)
}

// runChromium runs run.mjs over runs and returns the observations by "engine/mode".
func runChromium(t *testing.T, node string, runs any) map[string]observation {
	t.Helper()
	started := time.Now()
	var res struct {
		Results []observation `json:"results"`
	}
	runScript(t, node, "run.mjs", map[string]any{
		"chromium": chromiumPath, "userDataDir": t.TempDir(), "timeoutMs": 10000, "runs": runs,
	}, &res)
	byKey := map[string]observation{}
	for _, o := range res.Results {
		if o.Mode == "userAgent" {
			t.Logf("browser: %s (run took %v)", o.UserAgent, time.Since(started).Round(time.Millisecond))
			continue
		}
		byKey[o.Engine+"/"+o.Mode] = o
	}
	return byKey
}

// runScript runs `node <script> <cfg as JSON>` (for at most two minutes) and decodes the JSON
// it prints into res; it ends the test when the script fails or prints {"error":…}.
func runScript(t *testing.T, node, script string, cfg, res any) {
	t.Helper()
	path, _ := filepath.Abs(script)
	arg, _ := json.Marshal(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, path, string(arg))
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var failed struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(out, &failed)
	if jerr := json.Unmarshal(out, res); jerr != nil || err != nil || failed.Error != "" {
		t.Fatalf("node %s: %v %s (json: %v); stdout %q; stderr %q", script, err, failed.Error, jerr, tail(string(out), 4000), tail(stderr.String(), 4000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// pageServer serves the test page on its own loopback port, hence its own origin.
type pageServer struct {
	mux    *http.ServeMux
	origin string // http://127.0.0.1:port
	url    string // origin + "/"
}

func servePage(t *testing.T) *pageServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	origin := "http://" + ln.Addr().String()
	return &pageServer{mux: mux, origin: origin, url: origin + "/"}
}

// requireBrowserTools returns the node binary once node, Chromium and browser/node_modules
// (playwright-core) are all present. Without them the test skips saying how to install them —
// except under CI=true, where .ci/run installs them and their absence is a failure.
func requireBrowserTools(t *testing.T) string {
	t.Helper()
	missing := func(msg string) { t.Helper(); testenv.Missing(t, msg) }
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found: apt-get install nodejs npm")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		missing(chromiumPath + " not found: apt-get install chromium")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core", "package.json")); err != nil {
		missing("browser/node_modules/playwright-core missing: run (cd browser && npm ci)")
	}
	return node
}
