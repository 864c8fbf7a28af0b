package bench

import (
	"context"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
)

// TestRedisPublisherKeepsEachTargetsOrder publishes a plan over several pipelined
// connections and checks, from a pattern subscriber, that every message arrives once and
// each target's messages in sequence order.
func TestRedisPublisherKeepsEachTargetsOrder(t *testing.T) {
	for _, library := range []bool{false, true} {
		t.Run(map[bool]string{false: "streaming", true: "go-redis"}[library], func(t *testing.T) {
			testRedisPublisher(t, library)
		})
	}
}

func testRedisPublisher(t *testing.T, library bool) {
	rs := redistest.Start(t)
	sub := rs.Client(t).PSubscribe(t.Context(), "ws:*")
	defer sub.Close()
	if _, err := sub.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	p := Params{Scenario: ScenarioFanout, Conns: 7, Messages: 700, PublishVia: "redis", RedisURL: rs.URL(),
		Publishers: 3, Pipeline: 16, Run: "rp", LibraryPublisher: library}
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	st, err := Publish(t.Context(), &p)
	if err != nil || st.Published != 700 || st.Errors != 0 || st.NoSubscribers != 0 {
		t.Fatalf("stats %+v err %v", st, err)
	}
	next := map[int]int{}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for n := 0; n < 700; n++ {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		run, j, k, _, ok := ParseStamp([]byte(msg.Payload))
		if !ok || string(run) != "rp" || msg.Channel != p.Targets()[j].Channel {
			t.Fatalf("message %q on %s", msg.Payload, msg.Channel)
		}
		if k != next[j] {
			t.Fatalf("target %d: got seq %d, want %d", j, k, next[j])
		}
		next[j]++
	}
	for j, tg := range p.Targets() {
		if next[j] != tg.Count {
			t.Fatalf("target %d got %d of %d", j, next[j], tg.Count)
		}
	}
}

func TestRawPublisherCountsChannelsWithoutSubscribers(t *testing.T) {
	rs := redistest.Start(t)
	p := Params{Scenario: ScenarioBroadcast, Conns: 1, Repeat: 5, PublishVia: "redis", RedisURL: rs.URL(), Run: "rz",
		PublishRate: 1000}
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	st, err := Publish(t.Context(), &p)
	if err != nil || st.Published != 5 || st.NoSubscribers != 5 {
		t.Fatalf("stats %+v err %v", st, err)
	}
}
