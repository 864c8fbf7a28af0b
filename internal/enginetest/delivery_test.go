package enginetest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// A user's messages reach every connection of that user only, a group's every member, a
// broadcast everyone, each connection in delivery order, as text, counted once written.
func TestDeliveryToUserGroupAndBroadcast(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, func(o *session.Options) { o.Shards = 3 })
		a1 := servicetest.Dial(t, r.UserURL("alice", "class-1"))
		a2 := servicetest.Dial(t, r.UserURL("alice", "class-1"))
		b := servicetest.Dial(t, r.UserURL("bob", "class-1", "class-2"))
		c := servicetest.Dial(t, r.UserURL("carol"))
		r.WaitAccepted(t, 4)
		r.Engine.Deliver([]registry.Delivery{
			{Target: registry.Target{Kind: registry.User, ID: "alice"}, Payload: []byte(`{"n":1}`)},
			{Target: registry.Target{Kind: registry.Group, ID: "class-1"}, Payload: []byte(`{"n":2}`)},
			{Target: registry.Target{Kind: registry.User, ID: "nobody"}, Payload: []byte(`{"n":0}`)},
			{Target: registry.Target{Kind: registry.Group, ID: "class-2"}, Payload: []byte(`{"n":"b"}`)},
		})
		r.Deliver(registry.Broadcast, "", `{"n":3}`)
		r.Deliver(registry.User, "carol", `{"n":"c"}`) // after the broadcast: carol's last
		want := map[*servicetest.Client][]string{
			a1: {`{"n":1}`, `{"n":2}`, `{"n":3}`},
			a2: {`{"n":1}`, `{"n":2}`, `{"n":3}`},
			b:  {`{"n":2}`, `{"n":"b"}`, `{"n":3}`},
			c:  {`{"n":3}`, `{"n":"c"}`},
		}
		for cl, msgs := range want {
			for _, w := range msgs {
				if m := cl.Next(t, enginetest.Wait); m.Data != w || m.Binary {
					t.Fatalf("got %q (binary %v), want %q", m.Data, m.Binary, w)
				}
			}
		}
		const sent = 3 + 3 + 3 + 2 // counted once written, which may be just after the client has it
		testenv.Eventually(t, enginetest.Wait, fmt.Sprintf("websocket_messages_sent_total = %d", sent), func() bool {
			return r.Metrics.MessagesSent.Get() >= sent
		})
		if got := r.Metrics.MessagesSent.Get(); got != sent {
			t.Fatalf("websocket_messages_sent_total = %d, want %d", got, sent)
		}
	})
}

// A message delivered as soon as the client has its 101 reaches it.
func TestMessageDeliveredRightAfterOpenIsNotMissed(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		for i := range 20 {
			user := fmt.Sprintf("fresh-%d", i)
			c := servicetest.Dial(t, r.UserURL(user))
			r.Deliver(registry.User, user, "hi")
			if m := c.NextText(t, enginetest.Wait); m != "hi" {
				t.Fatalf("got %q", m)
			}
		}
	})
}

// Connections are spread evenly over the shards, and each shard's gauge says how many it
// holds; the handshakes are timed.
func TestConnectionsSpreadOverShardsAndGauged(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, func(o *session.Options) { o.Shards = 2 })
		for i := range 4 {
			servicetest.Dial(t, r.UserURL(fmt.Sprintf("m%d", i)))
			r.WaitAccepted(t, i+1) // placement is by load: let each land before the next
		}
		wants := []string{
			`eventloop_shard_connections{shard="0"} 2`, `eventloop_shard_connections{shard="1"} 2`,
			"websocket_connections_active 4", "websocket_handshake_duration_seconds_count 4",
		}
		// The epoll engine's Accept does not wait for the shard to register the connection.
		testenv.Eventually(t, enginetest.Wait, fmt.Sprintf("metrics showing %q", wants), func() bool {
			out := r.Exposition()
			for _, w := range wants {
				if !strings.Contains(out, w+"\n") {
					return false
				}
			}
			return true
		})
	})
}

// New refuses options without a Policy.
func TestNewRequiresPolicy(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		if _, err := k.New(session.Options{}); err == nil {
			t.Fatal("New without a Policy succeeded")
		}
	})
}
