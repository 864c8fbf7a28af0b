package sequence

import (
	"context"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
)

// TestEmbeddedBackplaneDeliversPositionsThroughTheRouter: the embedded backplane's sequenced
// messages reach the engine with their positions, in order, and a channel released and held
// again starts afresh (nothing published while nobody held it is owed to the new holder).
func TestEmbeddedBackplaneDeliversPositionsThroughTheRouter(t *testing.T) {
	rec := newRecorder()
	r := New(Options{Topics: testTopics, Limit: 100}, rec)
	bp, err := backplane.NewEmbedded(backplane.EmbeddedOptions{Linger: -1, History: history.Limits{Size: 100, TTL: time.Minute}}, r)
	if err != nil {
		t.Fatal(err)
	}
	r.SetHistory(bp.History())
	ctx := context.Background()
	if err := bp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer bp.Close()
	ch := "ws:ann"
	if err := bp.Subscribe(ctx, []string{ch, "ws:bob"}); err != nil {
		t.Fatal(err)
	}
	publish := func(payload string) history.Position {
		p, err := bp.PublishSequenced(ctx, ch, []byte(payload), "")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := publish("1")
	publish("2")
	tg, _ := testTopics.Parse(ch)
	eventually := func(n int) {
		if !testenv.Until(10*time.Second, func() bool { return len(rec.stream(tg)) >= n }) {
			t.Fatalf("got%s, want %d deliveries", describe(rec.stream(tg)), n)
		}
	}
	eventually(2)
	bp.Unsubscribe([]string{ch})
	publish("3") // nobody holds the channel: dropped
	// Messages are dispatched in publish order: once a later one of another channel arrived,
	// 3 was dropped.
	if err := bp.Publish(ctx, "ws:bob", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the marker delivered", func() bool {
		return len(rec.stream(registry.Target{Kind: registry.User, ID: "bob"})) > 0
	})
	if err := bp.Subscribe(ctx, []string{ch}); err != nil {
		t.Fatal(err)
	}
	publish("4")
	eventually(3)
	awaitIdle(t, r)
	out := rec.stream(tg)
	if len(out) != 3 || out[0].Position != first || out[1].Position.Seq != 2 || out[2].Position.Seq != 4 || string(out[2].Payload) != "4" {
		t.Fatalf("got%s, want positions 1, 2, then 4 (3 was published while nobody held the channel)", describe(out))
	}
}
