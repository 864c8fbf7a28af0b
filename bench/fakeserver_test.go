package bench

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/auth"
)

// fakeServer is a minimal stand-in for websocket-service, enough to test the harness's
// accounting end to end without the real service: /ws with a token, echo, and
// /api/publish routed by user, group or broadcast. duplicate makes it send every published
// message twice, to prove duplicates are counted.
type fakeServer struct {
	t         *testing.T
	srv       *httptest.Server
	verifier  *auth.Verifier
	upgrader  *gws.Upgrader
	duplicate bool

	mu     sync.Mutex
	users  map[string][]*gws.Conn
	groups map[string][]*gws.Conn
	all    map[*gws.Conn]struct{}
}

const fakeSecret = "bench-test-secret-0123456789abcdef"
const fakeKey = "bench-key"

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: []byte(fakeSecret)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, verifier: v, users: map[string][]*gws.Conn{}, groups: map[string][]*gws.Conn{}, all: map[*gws.Conn]struct{}{}}
	f.upgrader = gws.NewUpgrader(&fakeHandler{f: f}, &gws.ServerOption{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", f.serveWS)
	mux.HandleFunc("/api/publish", f.servePublish)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) wsURL() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws" }

func (f *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	claims, err := f.verifier.Verify(r.URL.Query().Get("token"))
	if err != nil {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	// Registration happens under the lock taken before the 101 is written, so a publish that
	// follows the client's open waits for it (the real service subscribes before the 101).
	f.mu.Lock()
	c, err := f.upgrader.Upgrade(w, r)
	if err != nil {
		f.mu.Unlock()
		return
	}
	c.Session().Store("claims", claims)
	f.users[claims.Subject] = append(f.users[claims.Subject], c)
	for _, g := range claims.Groups {
		f.groups[g] = append(f.groups[g], c)
	}
	f.all[c] = struct{}{}
	f.mu.Unlock()
	go c.ReadLoop()
}

func (f *fakeServer) forget(c *gws.Conn) {
	v, _ := c.Session().Load("claims")
	claims := v.(auth.Claims)
	f.mu.Lock()
	defer f.mu.Unlock()
	drop := func(list []*gws.Conn) []*gws.Conn {
		out := list[:0]
		for _, e := range list {
			if e != c {
				out = append(out, e)
			}
		}
		return out
	}
	f.users[claims.Subject] = drop(f.users[claims.Subject])
	for _, g := range claims.Groups {
		f.groups[g] = drop(f.groups[g])
	}
	delete(f.all, c)
}

func (f *fakeServer) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fakeKey {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	var body apiBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	var targets []*gws.Conn
	switch {
	case body.Broadcast:
		for c := range f.all {
			targets = append(targets, c)
		}
	case body.Group != "":
		targets = append(targets, f.groups[body.Group]...)
	default:
		targets = append(targets, f.users[body.UserID]...)
	}
	f.mu.Unlock()
	for _, c := range targets {
		_ = c.WriteMessage(gws.OpcodeText, body.Message)
		if f.duplicate {
			_ = c.WriteMessage(gws.OpcodeText, body.Message)
		}
	}
	w.WriteHeader(http.StatusAccepted)
}

type fakeHandler struct {
	gws.BuiltinEventHandler
	f *fakeServer
}

func (h *fakeHandler) OnClose(c *gws.Conn, err error) { h.f.forget(c) }

func (h *fakeHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, append([]byte("Echo: "), m.Bytes()...))
}
