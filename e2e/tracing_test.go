package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/otlpsink"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

// Tracing (docs/OPERATIONS.md, "Tracing"): a publish that carries a W3C traceparent, through
// the API or through FCALL ws_publish, is followed into every node: each node records one
// delivery span for it, in the publisher's trace, with the connections it reached there; a
// plain PUBLISH starts a trace of its own on each node. v1 clients still get the bytes
// published. The OTEL_* variables are process-wide, so this test does not run in parallel
// with others (t.Setenv) and runs the engines one after the other.
func TestTracingFollowsAPublishIntoEveryNode(t *testing.T) {
	sink := traceInto(t)
	for i, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) { traceTwoNodes(t, sink, engine, i) })
	}
}

func traceTwoNodes(t *testing.T, sink *otlpsink.Sink, engine string, run int) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	a := servicetest.Start(t, servicetest.Options{Engine: engine, RedisURL: rs.URL()})
	b := servicetest.Start(t, servicetest.Options{Engine: engine, RedisURL: rs.URL()})
	var clients []*servicetest.Client
	var tokens []string
	for i, n := range []*servicetest.Service{a, a, b, b, b} {
		tok := n.Token(t, fmt.Sprintf("u%d", i), "class7")
		tokens = append(tokens, tok)
		clients = append(clients, servicetest.Dial(t, n.DialURL(tok)))
	}
	waitActive(t, a, 2)
	waitActive(t, b, 3)
	expectRefusal(t, servicetest.Dial(t, a.DialURL("not-a-token")), "AUTH_FAILED", 1008)
	received := func(want string) {
		t.Helper()
		for _, c := range clients {
			expectText(t, c, want)
		}
	}

	// Through the API, with the backend's traceparent.
	apiTrace := fmt.Sprintf("%032x", 0xa1+run)
	req, err := http.NewRequest(http.MethodPost, a.URL+"/api/publish", strings.NewReader(`{"group":"class7","message":{"lesson":"started"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+servicetest.PublishKey)
	req.Header.Set("traceparent", "00-"+apiTrace+"-00000000000000b1-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/publish: %d", resp.StatusCode)
	}
	received(`{"lesson":"started"}`)

	// Through FCALL, as a backend in any language does.
	fcallTrace := fmt.Sprintf("%032x", 0xf1+run)
	h, m := history.Keys("ws-group:class7")
	err = rdb.FCall(context.Background(), history.PublishFunction, []string{h, m}, "ws-group:class7", `{"from":"fcall"}`,
		"00-"+fcallTrace+"-00000000000000f1-01").Err()
	if err != nil {
		t.Fatalf("FCALL: %v", err)
	}
	received(`{"from":"fcall"}`)

	// Plain PUBLISH: no traceparent, a new trace on each node.
	if err := rdb.Publish(context.Background(), "ws-group:class7", "plain").Err(); err != nil {
		t.Fatal(err)
	}
	received("plain")

	nodes := map[string]bool{} // the service.instance.id of each node
	eventually(t, 3*wait, "the publish span and one delivery span per node, for each publish", func() bool {
		spans := sink.Spans()
		pub := find(spans, func(s otlpsink.Span) bool { return s.Name == "POST /api/publish" && s.TraceID == apiTrace })
		api := find(spans, func(s otlpsink.Span) bool { return s.Name == "ws.deliver" && s.TraceID == apiTrace })
		fcall := find(spans, func(s otlpsink.Span) bool { return s.Name == "ws.deliver" && s.TraceID == fcallTrace })
		plain := find(spans, func(s otlpsink.Span) bool {
			return s.Name == "ws.deliver" && s.TraceID != apiTrace && s.TraceID != fcallTrace && s.Attrs["ws.cursor"] == nil &&
				s.Attrs["messaging.destination.name"] == "ws-group:class7" && !strings.HasPrefix(s.TraceID, "00000")
		})
		received := func(trace string) []otlpsink.Span {
			return find(spans, func(s otlpsink.Span) bool { return s.Name == "backplane.receive" && s.TraceID == trace })
		}
		if len(pub) != 1 || len(api) != 2 || len(fcall) != 2 || len(plain) < 2 ||
			len(received(apiTrace)) != 2 || len(received(fcallTrace)) != 2 {
			return false
		}
		if pub[0].ParentID != "00000000000000b1" || pub[0].Attrs["ws.stream.kind"] != "group" {
			t.Fatalf("publish span %+v: want a child of the caller's span, kind group", pub[0])
		}
		for _, set := range [][]otlpsink.Span{api, fcall} {
			if set[0].Instance == set[1].Instance {
				t.Fatalf("two delivery spans from one node: %+v", set)
			}
			for _, d := range set {
				nodes[d.Instance] = true
			}
		}
		return true
	})
	spans := sink.Spans()
	for _, set := range []string{apiTrace, fcallTrace} {
		var counts []int64
		for _, d := range find(spans, func(s otlpsink.Span) bool { return s.Name == "ws.deliver" && s.TraceID == set }) {
			if d.Attrs["ws.recipients"] != d.Attrs["ws.queued"] {
				t.Errorf("delivery span %+v: recipients and queued differ with every client reading", d)
			}
			r, _ := d.Attrs["ws.recipients"].(int64)
			counts = append(counts, r)
			// The delivery span sits under the node's receive span, which is the publisher's child.
			parent := find(spans, func(s otlpsink.Span) bool { return s.SpanID == d.ParentID })
			if len(parent) != 1 || parent[0].Name != "backplane.receive" || parent[0].Instance != d.Instance {
				t.Errorf("delivery span %+v: parent %+v, want the node's backplane.receive span", d, parent)
			}
		}
		if !(counts[0] == 2 && counts[1] == 3 || counts[0] == 3 && counts[1] == 2) {
			t.Errorf("trace %s: recipients per node %v, want 2 and 3", set, counts)
		}
	}
	// Each node's receive span is the publisher's child: for the API the publish span, for
	// FCALL the caller's span named in the traceparent argument. The trace crossed Redis.
	pub := find(spans, func(s otlpsink.Span) bool { return s.Name == "POST /api/publish" && s.TraceID == apiTrace })[0]
	for trace, parent := range map[string]string{apiTrace: pub.SpanID, fcallTrace: "00000000000000f1"} {
		recv := find(spans, func(s otlpsink.Span) bool { return s.Name == "backplane.receive" && s.TraceID == trace })
		if len(recv) != 2 || recv[0].Instance == recv[1].Instance {
			t.Errorf("trace %s: receive spans %+v, want one on each node", trace, recv)
		}
		for _, r := range recv {
			if r.ParentID != parent {
				t.Errorf("trace %s: receive span %+v has parent %s, want the publisher's span %s", trace, r, r.ParentID, parent)
			}
		}
	}
	if s := pub.Attrs["ws.cursor"]; s == nil || pub.Attrs["ws.payload.bytes"] != int64(len(`{"lesson":"started"}`)) {
		t.Errorf("publish span attributes %v: want a cursor and the payload's size", pub.Attrs)
	}
	// Upgrades: accepted, with the shard; never the token.
	ups := find(spans, func(s otlpsink.Span) bool { return s.Name == "ws.upgrade" && nodes[s.Instance] })
	if len(ups) != 6 {
		t.Fatalf("%d upgrade spans from these nodes, want 6", len(ups))
	}
	refused := 0
	for _, u := range ups {
		if u.Attrs["ws.upgrade.result"] == "auth_failed" && u.Attrs["ws.error.code"] == "AUTH_FAILED" && u.Attrs["ws.shard"] == nil {
			refused++
			continue
		}
		if u.Attrs["ws.upgrade.result"] != "accepted" || u.Attrs["ws.shard"] == nil || u.Attrs["ws.engine"] != engine {
			t.Errorf("upgrade span attributes %v: want result accepted, a shard and engine %s", u.Attrs, engine)
		}
	}
	if refused != 1 {
		t.Errorf("%d upgrade spans of the refused token, want 1 with result auth_failed and code AUTH_FAILED", refused)
	}
	for _, s := range spans {
		for k, v := range s.Attrs {
			for _, tok := range tokens {
				if str, ok := v.(string); ok && strings.Contains(str, tok[strings.LastIndexByte(tok, '.')+1:]) {
					t.Fatalf("span %s attribute %s holds a token", s.Name, k)
				}
			}
		}
	}
}

// traceInto points the services this test starts at an in-process OTLP receiver, sampling
// everything.
func traceInto(t *testing.T) *otlpsink.Sink {
	t.Helper()
	sink, err := otlpsink.Start(true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.Endpoint())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	t.Setenv("OTEL_SERVICE_NAME", "ws-trace-test")
	return sink
}

// The delivery span says what was dropped and why: the message that pushed a client that
// never reads over SEND_QUEUE_LIMIT counts it as a slow_consumer drop, next to the reader it
// was queued to.
func TestDeliverySpanCountsASlowConsumer(t *testing.T) {
	for _, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) {
			sink := traceInto(t)
			n := startNode(t, engine, embedded, slowConsumerEnv)
			rawDial(t, n.Addr, "/ws?token="+n.Token(t, "slow", "class7"), rawOptions{ReceiveBuf: 4096})
			good := dial(t, n.Service, "good", "class7")
			waitActive(t, n.Service, 2)
			pad := strings.Repeat("x", 8<<10)
			for i := 0; i < slowBatches*slowBatchSize && n.Metric(t, `websocket_disconnects_total{code="1013"}`) == 0; i++ {
				msg := fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, i, pad)
				n.Publish(t, group("class7"), msg)
				expectText(t, good, msg)
			}
			n.WaitMetric(t, `websocket_disconnects_total{code="1013"}`, 1, wait)
			eventually(t, 3*wait, "a delivery span with the slow consumer's drop", func() bool {
				for _, s := range sink.Spans() {
					if s.Name == "ws.deliver" && s.Attrs["ws.dropped.slow_consumer"] == int64(1) {
						if s.Attrs["ws.recipients"] != int64(2) || s.Attrs["ws.queued"] != int64(1) {
							t.Fatalf("delivery span %v: want 2 recipients, 1 queued", s.Attrs)
						}
						return true
					}
				}
				return false
			})
		})
	}
}

func find(spans []otlpsink.Span, keep func(otlpsink.Span) bool) []otlpsink.Span {
	var out []otlpsink.Span
	for _, s := range spans {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}
