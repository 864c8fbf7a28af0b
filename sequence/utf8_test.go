package sequence

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

func TestRouterDropsNonUTF8PayloadsCountsEachAndLogsOncePerChannel(t *testing.T) {
	var logs bytes.Buffer
	m := telemetry.New()
	rec := newRecorder()
	r := New(Options{Topics: testTopics, Metrics: m, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, rec)
	bad := []byte("x\xff")
	r.Deliver([]backplane.Message{{Channel: "ws:u1", Payload: bad}, {Channel: "ws:u1", Payload: []byte("ok")}, {Channel: "ws:u1", Payload: bad}})
	r.Deliver([]backplane.Message{{Channel: "ws:u1", Payload: bad}, {Channel: "ws-broadcast", Payload: bad}})
	if got := describe(rec.stream(registry.Target{Kind: registry.User, ID: "u1"})) + describe(rec.stream(registry.Target{Kind: registry.Broadcast})); got != " ok" {
		t.Fatalf("delivered%s, want only the valid payload", got)
	}
	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), `websocket_messages_dropped_total{reason="invalid_utf8"} 4`) {
		t.Fatal("the four invalid payloads were not counted")
	}
	if n := strings.Count(logs.String(), "not UTF-8"); n != 2 {
		t.Fatalf("%d log lines, want one per channel (2):\n%s", n, logs.String())
	}
	// A flood of new channels is logged up to the cap, then once more to say so.
	logs.Reset()
	for i := range maxLoggedChannels + 10 {
		r.Deliver([]backplane.Message{{Channel: "ws:flood" + strconv.Itoa(i), Payload: bad}})
	}
	if n := strings.Count(logs.String(), "\n"); n != maxLoggedChannels-2+1 {
		t.Fatalf("%d log lines for %d new channels, want %d", n, maxLoggedChannels+10, maxLoggedChannels-2+1)
	}
}

// A sequenced payload that is not UTF-8 is dropped like a plain one, and its position still
// counts: the next message follows it without a repair or a gap.
func TestNonUTF8SequencedPayloadIsDroppedWithoutAHole(t *testing.T) {
	f := newFixture(t, history.Limits{Size: 100, TTL: time.Minute}, 100)
	ch := "ws:ann"
	first := f.publish(ch, "1")
	f.router.Deliver([]backplane.Message{first, f.publish(ch, "x\xff"), f.publish(ch, "3")})
	e := first.Position.Epoch % 1000
	if got, want := f.output(ch), fmt.Sprintf(" %d.1 %d.3", e, e); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
