package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// docs/PROTOCOL.md "Channels": who receives what.

func TestUserChannelReachesEveryConnectionOfThatUserOnly(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		tab1 := dial(t, n.Service, "u1")
		tab2 := dial(t, n.Service, "u1")
		other := dial(t, n.Service, "u2")
		waitActive(t, n.Service, 3)
		const payload = `{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123","status":"completed"}}`
		n.publish(t, user("u1"), payload)
		expectText(t, tab1, payload)
		expectText(t, tab2, payload)
		other.Quiet(t, 300*time.Millisecond)
	})
}

func TestGroupChannelReachesEveryMemberOnly(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		a := dial(t, n.Service, "alice", "class7")
		b := dial(t, n.Service, "bob", "class8", "class7")
		outsider := dial(t, n.Service, "carol", "class8")
		nobody := dial(t, n.Service, "dave")
		waitActive(t, n.Service, 4)
		n.publish(t, group("class7"), `{"type":"notification","event_type":"lesson_started","data":{}}`)
		expectText(t, a, `{"type":"notification","event_type":"lesson_started","data":{}}`)
		expectText(t, b, `{"type":"notification","event_type":"lesson_started","data":{}}`)
		outsider.Quiet(t, 300*time.Millisecond)
		nobody.Quiet(t, 10*time.Millisecond)
	})
}

func TestBroadcastChannelReachesEveryConnection(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		clients := []*servicetest.Client{
			dial(t, n.Service, "u1"), dial(t, n.Service, "u1"), dial(t, n.Service, "u2", "g"), dial(t, n.Service, "u3"),
		}
		waitActive(t, n.Service, len(clients))
		n.publish(t, everyone, `{"type":"notification","event_type":"maintenance","data":{"in":"5m"}}`)
		for _, c := range clients {
			expectText(t, c, `{"type":"notification","event_type":"maintenance","data":{"in":"5m"}}`)
		}
	})
}

func TestPayloadIsForwardedVerbatim(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1")
		waitActive(t, n.Service, 1)
		// Odd spacing, key order, escapes and non-ASCII: a re-encoding would change the bytes.
		for _, payload := range []string{
			`{ "z":1,  "a" : [ 1,2 ] , "s":"\u00e9 ü \"q\"" }`,
			`{"type":"notification","event_type":"x","data":{"n":1.50,"big":12345678901234567890}}`,
			`plain text, not JSON`,
		} {
			n.publish(t, user("u1"), payload)
			expectText(t, c, payload)
		}
	})
}

func TestIndependentClientReceivesUserGroupAndBroadcastMessages(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, n.DialURL(n.Token(t, "u1", "class7")), nil)
		if err != nil {
			t.Fatalf("coder/websocket dial: %v", err)
		}
		defer conn.CloseNow()
		waitActive(t, n.Service, 1)
		n.publish(t, user("u1"), `{"to":"user"}`)
		n.publish(t, group("class7"), `{"to":"group"}`)
		n.publish(t, everyone, `{"to":"all"}`)
		// Three channels: docs/PROTOCOL.md "Channels" orders messages per channel only, so any
		// order is right.
		want := map[string]bool{`{"to":"user"}`: true, `{"to":"group"}`: true, `{"to":"all"}`: true}
		for range 3 {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if typ != websocket.MessageText || !want[string(data)] {
				t.Fatalf("got %v %q, want one text message each of %v", typ, data, want)
			}
			delete(want, string(data))
		}
		if err := conn.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatalf("close: %v", err)
		}
	})
}

// docs/PROTOCOL.md "Channels": per-connection ordering follows per-channel publish order.
func TestThousandMessagesArriveInPublishOrderAtEveryConnection(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		clients := []*servicetest.Client{
			dial(t, n.Service, "u1", "class7"), dial(t, n.Service, "u2", "class7"),
			dial(t, n.Service, "u2", "class7"), dial(t, n.Service, "u3", "class7"),
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*wait)
		defer cancel()
		coder, _, err := websocket.Dial(ctx, n.DialURL(n.Token(t, "u4", "class7")), nil)
		if err != nil {
			t.Fatalf("coder/websocket dial: %v", err)
		}
		defer coder.CloseNow()
		waitActive(t, n.Service, len(clients)+1)

		const count = 1000
		coderErr := make(chan error, 1)
		go func() {
			for i := 0; i < count; i++ {
				_, data, err := coder.Read(ctx)
				if err != nil {
					coderErr <- fmt.Errorf("coder/websocket read %d: %w", i, err)
					return
				}
				if want := fmt.Sprintf(`{"seq":%d}`, i); string(data) != want {
					coderErr <- fmt.Errorf("coder/websocket: message %d is %q, want %q", i, data, want)
					return
				}
			}
			coderErr <- nil
		}()
		publishSequence(t, n, count)
		// Each client buffers what it receives, so reading them one after the other is fine.
		for ci, c := range clients {
			for i := 0; i < count; i++ {
				if got, want := c.NextText(t, 2*wait), fmt.Sprintf(`{"seq":%d}`, i); got != want {
					t.Fatalf("client %d: message %d is %q, want %q", ci, i, got, want)
				}
			}
		}
		if err := <-coderErr; err != nil {
			t.Error(err)
		}
	})
}

// publishSequence publishes {"seq":0} … {"seq":count-1} to group class7 in order, over Redis
// with a pipeline (one round trip per batch, order kept) or through the node.
func publishSequence(t *testing.T, n *node, count int) {
	t.Helper()
	if n.rdb == nil {
		for i := 0; i < count; i++ {
			n.Publish(t, group("class7"), fmt.Sprintf(`{"seq":%d}`, i))
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	ch := n.App.Server().Topics().GroupChannel("class7")
	for start := 0; start < count; start += 100 {
		pipe := n.rdb.Pipeline()
		for i := start; i < start+100 && i < count; i++ {
			pipe.Publish(ctx, ch, fmt.Sprintf(`{"seq":%d}`, i))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("PUBLISH pipeline: %v", err)
		}
	}
}

// DESIGN "Subscribe before open": a message published once the client has seen the 101
// reaches it. Both engines register the connection in its shard before the client can see
// the 101 (the gws engine holds back the 101 gws writes until then).
func TestMessagePublishedRightAfterOpenIsDelivered(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		for i := 0; i < 20; i++ {
			u := fmt.Sprintf("u%d", i)
			c := dial(t, n.Service, u)
			n.publish(t, user(u), "first "+u)
			expectText(t, c, "first "+u)
		}
	})
}

func TestLargePayloadIsDeliveredIntact(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1")
		conn, _ := coderDial(t, n.DialURL(n.Token(t, "u1")), nil)
		waitActive(t, n.Service, 2)
		var b strings.Builder
		b.WriteString(`{"type":"notification","event_type":"report","data":{"rows":[`)
		for i := 0; b.Len() < 300<<10; i++ {
			fmt.Fprintf(&b, `{"i":%d,"v":"row %d"},`, i, i)
		}
		b.WriteString(`{}]}}`)
		payload := b.String()
		n.publish(t, user("u1"), payload)
		expectText(t, c, payload)
		if got := coderRead(t, conn); got != payload {
			t.Fatalf("independent client got %d bytes, want %d", len(got), len(payload))
		}
	})
}

func TestBroadcastReachesConnectionsOnEveryShard(t *testing.T) {
	const conns, shards = 40, 4
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"SHARDS": fmt.Sprint(shards)})
		clients := make([]*servicetest.Client, conns)
		for i := range clients {
			clients[i] = dial(t, n.Service, fmt.Sprintf("u%d", i), "all-of-us")
		}
		waitActive(t, n.Service, conns)
		total := 0.0
		for s := 0; s < shards; s++ {
			v := n.Metric(t, fmt.Sprintf(`eventloop_shard_connections{shard="%d"}`, s))
			if v == 0 {
				t.Errorf("shard %d holds no connection of %d", s, conns)
			}
			total += v
		}
		if total != conns {
			t.Errorf("eventloop_shard_connections sum to %v, want %d", total, conns)
		}
		for i := 0; i < 20; i++ {
			n.Publish(t, everyone, fmt.Sprintf("b%d", i))
			n.Publish(t, group("all-of-us"), fmt.Sprintf("g%d", i))
		}
		for ci, c := range clients {
			nb, ng := 0, 0
			for range 40 {
				m := c.NextText(t, wait)
				switch {
				case m == fmt.Sprintf("b%d", nb):
					nb++
				case m == fmt.Sprintf("g%d", ng):
					ng++
				default:
					t.Fatalf("client %d: %q out of order (next broadcast b%d, next group g%d)", ci, m, nb, ng)
				}
			}
		}
	})
}

func TestUnusualUserAndGroupIDsAreDelivered(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		ids := []string{"user:with:colons", "ünïcødé-用户", "a b", "ws-group:x", "42"}
		clients := make([]*servicetest.Client, len(ids))
		for i, id := range ids {
			clients[i] = dial(t, n.Service, id, "grp "+id)
		}
		waitActive(t, n.Service, len(ids))
		for i, id := range ids {
			n.publish(t, user(id), "u "+id)
			expectText(t, clients[i], "u "+id)
			n.publish(t, group("grp "+id), "g "+id)
			expectText(t, clients[i], "g "+id)
		}
		for _, c := range clients {
			c.Quiet(t, 10*time.Millisecond)
		}
	})
}

func TestTokenWithTheMaximumNumberOfGroupsIsServed(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		groups := make([]string, 256)
		for i := range groups {
			groups[i] = fmt.Sprintf("class-%03d", i)
		}
		c := dial(t, n.Service, "teacher", groups...)
		waitActive(t, n.Service, 1)
		if got := n.Metric(t, "backplane_subscriptions_active"); got != 258 {
			t.Fatalf("backplane_subscriptions_active = %v, want 258 (user, 256 groups, broadcast)", got)
		}
		n.publish(t, group("class-255"), "last class")
		expectText(t, c, "last class")
	})
}
