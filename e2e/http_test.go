package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// The README's endpoints other than /ws, docs/OPERATIONS.md "Metrics", and readiness while
// draining (docs/OPERATIONS.md "Lifecycle").

func TestHealthzAnswers200StatusOK(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		status, body := n.Get(t, "/healthz")
		var v map[string]any
		if status != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil || len(v) != 1 || v["status"] != "ok" {
			t.Fatalf("/healthz %d %q, want 200 {\"status\":\"ok\"}", status, body)
		}
	})
}

func TestReadyzAnswers200WhenTheBackplaneIsConnected(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		eventually(t, wait, "/readyz 200", func() bool {
			status, _ := n.Get(t, "/readyz")
			return status == http.StatusOK
		})
	})
}

// readyReason returns the status of /readyz and the reason field of its JSON body.
func readyReason(t *testing.T, s *servicetest.Service) (int, string) {
	t.Helper()
	status, body := s.Get(t, "/readyz")
	var v struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("/readyz body %q is not JSON: %v", body, err)
	}
	return status, v.Reason
}

func TestReadyzAnswers503WithReasonWhileDraining(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"SHUTDOWN_DRAIN_TIMEOUT": "2"})
		clients := make([]*servicetest.Client, 8)
		for i := range clients {
			clients[i] = dial(t, n.Service, "u1")
		}
		waitActive(t, n.Service, len(clients))
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- n.App.Shutdown(ctx)
		}()
		eventually(t, time.Second, "/readyz 503 while draining", func() bool {
			status, reason := readyReason(t, n.Service)
			return status == http.StatusServiceUnavailable && strings.Contains(reason, "drain")
		})
		// Liveness is unaffected: the process still serves.
		if status, body := n.Get(t, "/healthz"); status != http.StatusOK {
			t.Errorf("/healthz while draining: %d %s, want 200", status, body)
		}
		// No new upgrades while draining.
		if status, _ := rawStatus(t, n.Addr, "/ws?token="+n.Token(t, "u2"), nil); status != http.StatusServiceUnavailable {
			t.Errorf("upgrade while draining: status %d, want 503", status)
		}
		for i, c := range clients {
			if code, _ := c.WaitClose(t, wait); code != 1001 {
				t.Fatalf("client %d closed with %d while draining, want 1001", i, code)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		n.Stop()
	})
}

func TestDrainClosesWith1001(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1")
		conn, _ := coderDial(t, n.DialURL(n.Token(t, "u2")), nil)
		waitActive(t, n.Service, 2)
		n.Stop()
		expectClose(t, c, 1001, wait)
		if code := coderCloseCode(t, conn); code != 1001 {
			t.Fatalf("independent client closed with %d, want 1001", code)
		}
		if n.rdb != nil {
			if chans := n.subscriptions(t); len(chans) != 0 {
				t.Fatalf("PUBSUB CHANNELS = %q after shutdown", chans)
			}
		}
	})
}

// metricNames are series of the metrics of docs/OPERATIONS.md "Metrics" that a node exports
// from its start, with the Go runtime and process metrics.
var metricNames = []string{
	"websocket_connections_active",
	`websocket_connections_total{result="accepted"}`,
	`websocket_connections_total{result="auth_failed"}`,
	`websocket_connections_total{result="origin_rejected"}`,
	`websocket_connections_total{result="limit_reached"}`,
	`websocket_connections_total{result="rate_limited"}`,
	"websocket_handshake_duration_seconds_bucket",
	"websocket_handshake_duration_seconds_sum",
	"websocket_handshake_duration_seconds_count",
	"websocket_messages_sent_total",
	"websocket_messages_received_total",
	`websocket_messages_dropped_total{reason="slow_consumer"}`,
	`websocket_disconnects_total{code="1000"}`,
	"backplane_messages_received_total",
	"backplane_subscriptions_active",
	"backplane_reconnects_total",
	"backplane_connected",
	`eventloop_shard_connections{shard="0"}`,
	"go_goroutines",
	"process_resident_memory_bytes",
}

func TestMetricsExposeEverySpecName(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1")
		c.Send(t, "x")
		expectText(t, c, "Echo: x")
		// gws counts a frame sent once its write has returned, which may be after the client
		// has read it.
		n.WaitMetric(t, "websocket_messages_sent_total", 1, wait)
		status, body := n.Get(t, "/metrics")
		if status != http.StatusOK {
			t.Fatalf("/metrics %d", status)
		}
		for _, name := range metricNames {
			if !strings.Contains(body, "\n"+name) && !strings.HasPrefix(body, name) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		if strings.Contains(body, "u1") {
			t.Error("/metrics mentions a user id")
		}
		for series, min := range map[string]float64{
			"websocket_connections_active":                   1,
			`websocket_connections_total{result="accepted"}`: 1,
			"websocket_messages_received_total":              1,
			"websocket_messages_sent_total":                  1,
			"backplane_connected":                            1,
			"backplane_subscriptions_active":                 2, // ws:u1 and ws-broadcast
			"websocket_handshake_duration_seconds_count":     1,
		} {
			if got := n.Metric(t, series); got < min {
				t.Errorf("%s = %v, want at least %v", series, got, min)
			}
		}
	})
}

func TestMetricsCountBackplaneMessages(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1")
		waitActive(t, n.Service, 1)
		n.publish(t, user("u1"), `{"n":1}`)
		expectText(t, c, `{"n":1}`)
		if got := n.Metric(t, "backplane_messages_received_total"); got < 1 {
			t.Fatalf("backplane_messages_received_total = %v", got)
		}
	})
}

func TestPublishAPIIs404WithoutAKeyConfigured(t *testing.T) {
	n := startNode(t, servicetest.Engines()[0], embedded, map[string]string{"PUBLISH_API_KEY": ""})
	if status, body := postPublish(t, n.Service, "anything", `{"broadcast":true,"message":"x"}`); status != http.StatusNotFound {
		t.Fatalf("status %d %s, want 404", status, body)
	}
}

func TestPublishAPIIs401WithAWrongOrMissingKey(t *testing.T) {
	n := startNode(t, servicetest.Engines()[0], embedded, nil)
	c := dial(t, n.Service, "u1")
	waitActive(t, n.Service, 1)
	for _, key := range []string{"", "wrong", servicetest.PublishKey + "x", strings.ToUpper(servicetest.PublishKey)} {
		if status, body := postPublish(t, n.Service, key, `{"broadcast":true,"message":"x"}`); status != http.StatusUnauthorized {
			t.Errorf("key %q: status %d %s, want 401", key, status, body)
		}
	}
	c.Quiet(t, 200*time.Millisecond)
}

func TestPublishAPIIs400OnBadBodies(t *testing.T) {
	n := startNode(t, servicetest.Engines()[0], embedded, nil)
	for _, body := range []string{
		``,
		`not json`,
		`{"message":"x"}`,
		`{"user_id":"u1"}`,
		`{"user_id":"u1","message":null}`,
		`{"user_id":"u1","group":"g","message":"x"}`,
		`{"user_id":"u1","broadcast":true,"message":"x"}`,
		`{"broadcast":false,"message":"x"}`,
		`{"user_id":"u1","message":"x","extra":1}`,
		`{"user_id":7,"message":"x"}`,
		`[1,2,3]`,
	} {
		if status, text := postPublish(t, n.Service, servicetest.PublishKey, body); status != http.StatusBadRequest {
			t.Errorf("body %q: status %d %s, want 400", body, status, text)
		}
	}
}

func TestPublishAPIIs202AndDelivers(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1", "g1")
		waitActive(t, n.Service, 1)
		for body, want := range map[string]string{
			`{"user_id":"u1","message":{"type":"notification","event_type":"e","data":{}}}`: `{"type":"notification","event_type":"e","data":{}}`,
			`{"group":"g1","message":"plain text"}`:                                         `plain text`,
			`{"broadcast":true,"message":[1,2]}`:                                            `[1,2]`,
		} {
			status, text := postPublish(t, n.Service, servicetest.PublishKey, body)
			if status != http.StatusAccepted {
				t.Fatalf("body %s: status %d %s, want 202", body, status, text)
			}
			expectText(t, c, want)
		}
	})
}

func TestPublishAPIRefusesGET(t *testing.T) {
	n := startNode(t, servicetest.Engines()[0], embedded, nil)
	if status, _ := n.Get(t, "/api/publish"); status != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/publish: %d, want 405", status)
	}
}

func TestPlainHTTPRequestToWSIsRefused(t *testing.T) {
	n := startNode(t, servicetest.Engines()[0], embedded, nil)
	if status, _ := n.Get(t, "/ws?token="+n.Token(t, "u1")); status != http.StatusBadRequest {
		t.Fatalf("GET /ws without upgrade: %d, want 400", status)
	}
}

// Limits of the README's configuration table.

func TestMaxConnectionsRefusesTheUpgradeWithHTTP503(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"MAX_CONNECTIONS": "2"})
		dial(t, n.Service, "u1")
		dial(t, n.Service, "u2")
		waitActive(t, n.Service, 2)
		status, _ := rawStatus(t, n.Addr, "/ws?token="+n.Token(t, "u3"), nil)
		if status != http.StatusServiceUnavailable {
			t.Fatalf("third upgrade: status %d, want 503", status)
		}
		if got := n.Metric(t, `websocket_connections_total{result="limit_reached"}`); got != 1 {
			t.Fatalf(`websocket_connections_total{result="limit_reached"} = %v`, got)
		}
	})
}

func TestMaxConnectionsPerUserClosesTheExtraWithConnectionLimitAnd1008(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"MAX_CONNECTIONS_PER_USER": "2"})
		first := dial(t, n.Service, "u1")
		dial(t, n.Service, "u1")
		waitActive(t, n.Service, 2)
		expectRefusal(t, dial(t, n.Service, "u1"), "CONNECTION_LIMIT", 1008)
		if got := n.Metric(t, `websocket_connections_total{result="limit_reached"}`); got != 1 {
			t.Fatalf(`websocket_connections_total{result="limit_reached"} = %v, want 1`, got)
		}
		if got := n.Metric(t, "websocket_connections_active"); got != 2 {
			t.Fatalf("websocket_connections_active = %v after a refused third connection, want 2", got)
		}
		other := dial(t, n.Service, "u2") // another user is unaffected
		other.Send(t, "ok")
		expectText(t, other, "Echo: ok")
		first.Send(t, "still here")
		expectText(t, first, "Echo: still here")
	})
}

func TestHandshakeRatePerIPRefusesWithHTTP429(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"HANDSHAKE_RATE_PER_IP": "2"})
		tok := n.Token(t, "u1")
		var statuses []int
		for i := 0; i < 5; i++ {
			status, _ := rawStatus(t, n.Addr, "/ws?token="+tok, nil)
			statuses = append(statuses, status)
		}
		// A burst of 2 passes; of the next three (a token refills every 0.5 s) some are refused.
		if statuses[0] != 101 || statuses[1] != 101 || !slices.Contains(statuses[2:], http.StatusTooManyRequests) {
			t.Fatalf("statuses %v, want 101 101 then 429", statuses)
		}
		for _, s := range statuses {
			if s != 101 && s != http.StatusTooManyRequests {
				t.Fatalf("statuses %v: only 101 and 429 expected", statuses)
			}
		}
		if got := n.Metric(t, `websocket_connections_total{result="rate_limited"}`); got < 1 {
			t.Fatalf(`websocket_connections_total{result="rate_limited"} = %v`, got)
		}
	})
}

func TestConnectionLimitSlotIsFreedWhenAConnectionCloses(t *testing.T) {
	for _, limit := range []string{"MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_USER"} {
		t.Run(limit, func(t *testing.T) {
			eachEngine(t, func(t *testing.T, engine string) {
				n := startNode(t, engine, embedded, map[string]string{limit: "1"})
				c := dial(t, n.Service, "u1")
				waitActive(t, n.Service, 1)
				if err := c.Conn.WriteClose(1000, nil); err != nil {
					t.Fatal(err)
				}
				n.WaitMetric(t, "websocket_connections_active", 0, wait)
				d := dial(t, n.Service, "u1")
				d.Send(t, "again")
				expectText(t, d, "Echo: again")
			})
		})
	}
}

func TestShutdownCompletesInTimeWithAClientThatNeverReads(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		// A queue limit far above what is sent: the client is never closed as slow, its
		// socket buffers are simply full when the drain begins.
		n := startNode(t, engine, embedded, map[string]string{"SEND_QUEUE_LIMIT": "67108864", "SHUTDOWN_DRAIN_TIMEOUT": "1"})
		rawDial(t, n.Addr, "/ws?token="+n.Token(t, "stuck"), rawOptions{ReceiveBuf: 4096})
		ok := dial(t, n.Service, "ok")
		waitActive(t, n.Service, 2)
		pad := strings.Repeat("s", 8<<10)
		for i := 0; i < 1024; i++ {
			n.Publish(t, user("stuck"), pad)
		}
		start := time.Now()
		n.Stop()
		if d := time.Since(start); d > 4*time.Second {
			t.Fatalf("shutdown took %v with a 1 s drain window", d)
		}
		expectClose(t, ok, 1001, wait)
	})
}
