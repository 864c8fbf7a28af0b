package sequence

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// node is a Redis backplane delivering through a router to a recorder, as a service node is
// wired (Redis → backplane → router → engine).
type node struct {
	bp     *backplane.Redis
	router *Router
	rec    *recorder
	m      *telemetry.Metrics
}

func startNode(t *testing.T, srv *redistest.Server, limits history.Limits, chans []string) *node {
	t.Helper()
	n := &node{rec: newRecorder(), m: telemetry.New()}
	n.router = New(Options{Topics: testTopics, Limit: 1000, Metrics: n.m}, n.rec)
	bp, err := backplane.NewRedis(backplane.RedisOptions{URL: srv.URL(), History: limits, Metrics: n.m}, n.router)
	if err != nil {
		t.Fatal(err)
	}
	n.bp = bp
	n.router.SetHistory(bp.History())
	if err := bp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bp.Subscribe(ctx, chans); err != nil {
		t.Fatal(err)
	}
	return n
}

// killAndPublish closes every Pub/Sub connection and publishes payloads on channel with
// positions right after, in one transaction: they are published while the node is
// certainly not subscribed, so it can only get them from history.
func killAndPublish(t *testing.T, c *redis.Client, channel string, payloads ...string) {
	t.Helper()
	h, m := history.Keys(channel)
	_, err := c.TxPipelined(context.Background(), func(p redis.Pipeliner) error {
		p.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub")
		for _, pl := range payloads {
			p.Do(context.Background(), "FCALL", history.PublishFunction, 2, h, m, channel, pl)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("kill and publish: %v", err)
	}
}

// awaitStream waits until the stream of channel has delivered its message at seq (or a gap
// up to it), and returns its deliveries.
func (n *node) awaitStream(t *testing.T, channel string, seq uint64) []registry.Delivery {
	t.Helper()
	tg, _ := testTopics.Parse(channel)
	var out []registry.Delivery
	if !testenv.Until(20*time.Second, func() bool {
		out = n.rec.stream(tg)
		return len(out) > 0 && out[len(out)-1].Position.Seq >= seq
	}) {
		t.Fatalf("%s: position %d not delivered within 20s; got%s", channel, seq, describe(out))
	}
	return out
}

func (n *node) metric(name string) string {
	var b fmt.Stringer = &promText{n.m}
	return grepMetric(b.String(), name)
}

// TestKilledPubSubWhilePublishingLosesNothing: Redis closes the node's Pub/Sub connections
// three times while a backend publishes with positions to three streams; every message of
// each stream is delivered once, in order, without a gap, including those published while
// the node was not subscribed (repaired from history once the subscription resumed).
func TestKilledPubSubWhilePublishingLosesNothing(t *testing.T) {
	srv := redistest.Start(t)
	chans := []string{"ws:ann", "ws-group:class7", "ws-broadcast"}
	n := startNode(t, srv, history.Limits{Size: 10_000, TTL: time.Minute}, chans)
	client := srv.Client(t)

	var (
		mu   sync.Mutex
		last = map[string]uint64{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a backend publishing steadily
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ch := chans[i%len(chans)]
			p, err := n.bp.PublishSequenced(context.Background(), ch, []byte(fmt.Sprint(i)), "")
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			mu.Lock()
			last[ch] = p.Seq
			mu.Unlock()
		}
	}()
	for kill := range 3 {
		mu.Lock()
		seq := last[chans[0]]
		mu.Unlock()
		n.awaitStream(t, chans[0], seq+20) // traffic flows before each kill
		killAndPublish(t, client, chans[kill], "during the outage 1", "during the outage 2")
	}
	close(stop)
	wg.Wait()
	final := map[string]uint64{}
	for _, ch := range chans {
		res, err := n.bp.History().Read(context.Background(), ch, history.Position{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		final[ch] = res.Cursor.Seq
	}
	for _, ch := range chans {
		out := n.awaitStream(t, ch, final[ch])
		for i, d := range out {
			if d.Gap != nil || d.Position.Seq != uint64(i+1) {
				t.Fatalf("%s: delivery %d is not position %d:%s", ch, i, i+1, describe(out))
			}
		}
		if len(out) != int(final[ch]) {
			t.Fatalf("%s: %d deliveries, want %d", ch, len(out), final[ch])
		}
	}
	if got := n.metric("backplane_reconnects_total"); got != "3" && got != "4" && got != "5" && got != "6" {
		t.Errorf("backplane_reconnects_total = %s, want the three kills (of two connections) to show", got)
	}
	if got := n.metric(`backplane_gap_repairs_total{result="lost"}`); got != "0" {
		t.Errorf("lost repairs = %s, want 0", got)
	}
	if got := n.metric(`backplane_gap_repairs_total{result="repaired"}`); got == "0" {
		t.Errorf("repaired = 0, want some")
	}
}

// TestKilledPubSubWithTooShortAHistoryReportsTheGap: with HISTORY_SIZE 2, five messages
// published while the node's Pub/Sub connection is down cannot all be repaired: the stream
// gets one gap notice (trimmed, 5 missed) where they were, counted as lost, and continues.
func TestKilledPubSubWithTooShortAHistoryReportsTheGap(t *testing.T) {
	srv := redistest.Start(t)
	ch := "ws-group:class7"
	n := startNode(t, srv, history.Limits{Size: 2, TTL: time.Minute}, []string{ch})
	first, err := n.bp.PublishSequenced(context.Background(), ch, []byte("before"), "")
	if err != nil {
		t.Fatal(err)
	}
	n.awaitStream(t, ch, first.Seq)
	killAndPublish(t, srv.Client(t), ch, "lost 1", "lost 2", "lost 3", "lost 4", "lost 5")
	out := n.awaitStream(t, ch, first.Seq+5)
	if len(out) != 2 || out[1].Gap == nil || out[1].Gap.Reason != history.ReasonTrimmed || out[1].Gap.Missed != 5 {
		t.Fatalf("got%s, want the first message then a gap (trimmed, 5 missed)", describe(out))
	}
	// The stream continues after the gap.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.bp.Subscribe(ctx, []string{ch}); err != nil { // live again
		t.Fatal(err)
	}
	if _, err := n.bp.PublishSequenced(context.Background(), ch, []byte("after"), ""); err != nil {
		t.Fatal(err)
	}
	out = n.awaitStream(t, ch, first.Seq+6)
	if len(out) != 3 || string(out[2].Payload) != "after" {
		t.Fatalf("got%s, want the stream to continue after the gap", describe(out))
	}
	if got := n.metric(`backplane_gap_repairs_total{result="lost"}`); got != "1" {
		t.Errorf("lost repairs = %s, want 1", got)
	}
}
