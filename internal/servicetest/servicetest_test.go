package servicetest

import (
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/registry"
)

// These tests are deliberately not parallel: each checks that a node, once stopped, leaves
// no goroutine behind, which only works while nothing else runs.

func TestStoppedServiceLeavesNoGoroutines(t *testing.T) {
	for _, engine := range Engines() {
		for _, bp := range []string{"embedded", "redis"} {
			t.Run(engine+"/"+bp, func(t *testing.T) {
				var redisURL string
				if bp == "redis" {
					redisURL = redistest.Start(t).URL()
				}
				before := goleak.IgnoreCurrent()
				s := Start(t, Options{Engine: engine, RedisURL: redisURL})
				c := Dial(t, s.DialURL(s.Token(t, "u1", "g")))
				s.WaitMetric(t, "websocket_connections_active", 1, 5*time.Second)
				s.Publish(t, registry.Target{Kind: registry.Group, ID: "g"}, "hello")
				if got := c.NextText(t, 5*time.Second); got != "hello" {
					t.Fatalf("received %q", got)
				}
				c.Send(t, "x")
				if got := c.NextText(t, 5*time.Second); got != "Echo: x" {
					t.Fatalf("received %q", got)
				}
				s.Stop()
				if code, _ := c.WaitClose(t, 5*time.Second); code != 1001 {
					t.Fatalf("client closed with %d on Stop, want 1001", code)
				}
				http.DefaultClient.CloseIdleConnections()
				goleak.VerifyNone(t, before)
			})
		}
	}
}

func TestStopIsIdempotent(t *testing.T) {
	s := Start(t, Options{Engine: Engines()[0]})
	s.Stop()
	s.Stop()
}

func TestMetricReadsOneSeries(t *testing.T) {
	s := Start(t, Options{Engine: Engines()[0]})
	if got := s.Metric(t, "backplane_connected"); got != 1 {
		t.Fatalf("backplane_connected = %v on the embedded backplane", got)
	}
	if got := s.Metric(t, "no_such_metric"); got != 0 {
		t.Fatalf("absent metric = %v", got)
	}
}

func TestTokenTTLIsHonoured(t *testing.T) {
	s := Start(t, Options{Engine: Engines()[0]})
	c := Dial(t, s.DialURL(s.TokenTTL(t, -time.Minute, "u1")))
	if got := c.NextText(t, 5*time.Second); got != `{"type":"error","code":"TOKEN_EXPIRED","message":"Token expired"}` {
		t.Fatalf("received %q", got)
	}
}
