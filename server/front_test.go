package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// frontingEngine is a fakeEngine that reads upgrades itself (Fronter), as the epoll engine
// does: it records what Serve gave it and hands back ln, or fails.
type frontingEngine struct {
	*fakeEngine
	path     string
	upgrade  http.Handler
	timeout  time.Duration
	maxBytes int
	fail     error
}

func (e *frontingEngine) Front(ln net.Listener, path string, upgrade http.Handler, timeout time.Duration, maxBytes int) (net.Listener, error) {
	e.path, e.upgrade, e.timeout, e.maxBytes = path, upgrade, timeout, maxBytes
	if e.fail != nil {
		return nil, e.fail
	}
	return ln, nil
}

// serveOn serves f's server on a loopback listener until the test ends.
func serveOn(t *testing.T, f *fixture) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.srv.http.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func TestServeGivesAnEngineThatReadsUpgradesTheListenerAndTheAdmission(t *testing.T) {
	f := newFixture(t)
	fe := &frontingEngine{fakeEngine: f.engine}
	f.srv.engine = fe
	url := serveOn(t, f)
	if status := getOverTCP(t, url+PathHealthz); status != http.StatusOK {
		t.Fatalf("/healthz %d through the listener the engine returned", status)
	}
	if fe.path != PathWS || fe.timeout != readHeaderTimeout || fe.maxBytes != maxHeaderBytes {
		t.Fatalf("Front got path %q, header timeout %v, max header bytes %d", fe.path, fe.timeout, fe.maxBytes)
	}
	// The handler it got is the admission: an upgrade through it reaches Accept.
	r := httptest.NewRequest(http.MethodGet, PathWS+"?token="+f.token(t, "u1", time.Hour), nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	fe.upgrade.ServeHTTP(httptest.NewRecorder(), r)
	if len(f.engine.accepted) != 1 || f.engine.accepted[0].Identity.User != "u1" {
		t.Fatalf("accepted %+v", f.engine.accepted)
	}
}

func TestServeFallsBackToNetHTTPWhenTheEngineCannotFrontTheListener(t *testing.T) {
	f := newFixture(t)
	f.srv.engine = &frontingEngine{fakeEngine: f.engine, fail: errors.New("no descriptor")}
	url := serveOn(t, f)
	if status := getOverTCP(t, url+PathHealthz); status != http.StatusOK {
		t.Fatalf("/healthz %d", status)
	}
}

// getOverTCP is the status of a GET of url through a real socket.
func getOverTCP(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	return resp.StatusCode
}
