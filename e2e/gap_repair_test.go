package e2e_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

// docs/DESIGN.md "Gap repair": a Pub/Sub reconnect with Redis's data intact loses nothing,
// for v1 clients too.

// Redis closes the node's Pub/Sub connections three times while a backend publishes 300
// messages with positions to a group; two of them are published in the same transaction as
// each kill, so the node is certainly not subscribed when they go out. Every client receives
// every message once, in order, and nothing is counted lost.
func TestKilledPubSubWhilePublishingWithPositionsLosesNothing(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, redisBP, nil)
		const clients = 10
		conns := make([]*servicetest.Client, clients)
		for i := range conns {
			conns[i] = dial(t, n.Service, "u"+strconv.Itoa(i), "class7")
		}
		waitActive(t, n.Service, clients)
		channel := n.App.Server().Topics().Channel(group("class7"))
		ctx := context.Background()
		publish := func(i int) {
			t.Helper()
			pctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			if _, err := n.App.Server().Publish(pctx, group("class7"), []byte(strconv.Itoa(i))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		killAndPublish := func(i int) {
			t.Helper()
			h, m := history.Keys(channel)
			_, err := n.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub")
				for _, num := range []int{i, i + 1} {
					p.Do(ctx, "FCALL", history.PublishFunction, 2, h, m, channel, strconv.Itoa(num))
				}
				return nil
			})
			if err != nil {
				t.Fatalf("kill and publish: %v", err)
			}
		}
		i := 0
		for kill := 1; kill <= 3; kill++ {
			for ; i < 100*kill-50; i++ {
				publish(i)
			}
			killAndPublish(i)
			i += 2
			// The backend goes on publishing while the node's two Pub/Sub connections return.
			for n.Metric(t, "backplane_reconnects_total") < float64(2*kill) {
				publish(i)
				i++
			}
		}
		total := max(i, 300)
		for ; i < total; i++ {
			publish(i)
		}
		for i, c := range conns {
			for want := 0; want < total; want++ {
				if m := c.Next(t, 3*wait); m.Data != strconv.Itoa(want) {
					t.Fatalf("client %d received %q, want %d", i, m.Data, want)
				}
			}
		}
		if got := n.Metric(t, "backplane_reconnects_total"); got < 6 {
			t.Errorf("backplane_reconnects_total = %v, want the three kills of two connections to show", got)
		}
		if got := n.Metric(t, `backplane_gap_repairs_total{result="lost"}`); got != 0 {
			t.Errorf(`backplane_gap_repairs_total{result="lost"} = %v, want 0`, got)
		}
	})
}
