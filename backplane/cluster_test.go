package backplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

func TestClusterUsesShardedPubSubEndToEnd(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true}, sink)

	// Enough channels to land on every master, several sharing a slot via a hash tag.
	var chans []string
	for i := 0; i < 60; i++ {
		chans = append(chans, fmt.Sprintf("ws:user-%d", i))
	}
	chans = append(chans, "ws:{class7}a", "ws:{class7}b", "ws-broadcast")
	if err := r.Subscribe(ctx, chans); err != nil {
		t.Fatal(err)
	}

	shard := 0
	for _, addr := range cl.Addrs() {
		node := redis.NewClient(&redis.Options{Addr: addr})
		n := len(node.PubSubShardChannels(ctx, "*").Val())
		_ = node.Close()
		if n == 0 {
			t.Errorf("master %s has no sharded subscription", addr)
		}
		shard += n
	}
	if shard != len(chans) {
		t.Fatalf("PUBSUB SHARDCHANNELS lists %d channels over the masters, want %d", shard, len(chans))
	}

	pub, err := NewPublisher(cl.URL(), true, history.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, ch := range chans {
		if err := pub.Publish(ctx, ch, []byte("to "+ch)); err != nil {
			t.Fatal(err)
		}
	}
	got := sink.waitFor(t, len(chans), 5*time.Second)
	seen := map[string]bool{}
	for _, m := range got {
		if string(m.Payload) != "to "+m.Channel {
			t.Fatalf("payload %q on %s", m.Payload, m.Channel)
		}
		seen[m.Channel] = true
	}
	if len(seen) != len(chans) {
		t.Fatalf("received on %d channels, want %d", len(seen), len(chans))
	}
	// Through the backplane's own Publish too (SPUBLISH).
	if err := r.Publish(ctx, "ws:user-1", []byte("again")); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, len(chans)+1, 5*time.Second)
}

func TestClusterSlotMigrationResubscribesOnTheNewMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true}, sink)
	const ch = "ws:migrating"
	if err := r.Subscribe(ctx, []string{ch}); err != nil {
		t.Fatal(err)
	}
	m := openMasters(t, cl)
	_, dst := m.migrate(t, ch)

	testenv.Eventually(t, 10*time.Second, "subscription moved to the new master", func() bool {
		return m.nodes[dst].PubSubShardNumSub(ctx, ch).Val()[ch] == 1
	})
	if err := m.nodes[dst].SPublish(ctx, ch, "after migration").Err(); err != nil {
		t.Fatal(err)
	}
	got := sink.waitFor(t, 1, 5*time.Second)
	if string(got[len(got)-1].Payload) != "after migration" {
		t.Fatalf("got %q", got[len(got)-1].Payload)
	}
	testenv.Eventually(t, 5*time.Second, "ready after the migration", func() bool { return r.Ready() == nil })
}

// A topology change moves only the channels whose master changed: every other subscription
// stays on its connection, untouched, and so loses nothing while the moved ones resubscribe.
func TestClusterSlotMigrationLeavesEveryOtherSubscriptionInPlace(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true}, sink)
	const ch = "ws:migrating"
	chans := []string{ch}
	for i := 0; i < 30; i++ {
		chans = append(chans, fmt.Sprintf("ws:user-%d", i))
	}
	if err := r.Subscribe(ctx, chans); err != nil {
		t.Fatal(err)
	}
	m := openMasters(t, cl)
	before := m.pubsubClients(t)
	_, dst := m.migrate(t, ch)
	testenv.Eventually(t, 10*time.Second, "subscription moved to the new master", func() bool {
		return m.nodes[dst].PubSubShardNumSub(ctx, ch).Val()[ch] == 1
	})
	testenv.Eventually(t, 10*time.Second, "ready after the migration", func() bool { return r.Ready() == nil })
	after := m.pubsubClients(t)
	for addr, id := range before {
		if after[addr] != id {
			t.Errorf("master %s: Pub/Sub connection %q replaced by %q: its channels were resubscribed", addr, id, after[addr])
		}
	}
	if n := r.m.BackplaneReconnects.Get(); n != 0 {
		t.Errorf("backplane_reconnects_total = %d after a slot migration", n)
	}
	// Every channel is still delivered, the moved one on its new master.
	pub, err := NewPublisher(cl.URL(), true, history.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, c := range chans {
		if err := pub.Publish(ctx, c, []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	sink.waitFor(t, len(chans), 10*time.Second)
}

// masters holds a client per master of a test cluster, and each master's node id.
type masters struct {
	nodes map[string]*redis.Client
	ids   map[string]string
}

func openMasters(t *testing.T, cl *redistest.Cluster) *masters {
	t.Helper()
	m := &masters{nodes: map[string]*redis.Client{}, ids: map[string]string{}}
	for _, addr := range cl.Addrs() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = c.Close() })
		m.nodes[addr] = c
		m.ids[addr] = c.Do(ctx, "CLUSTER", "MYID").Val().(string)
	}
	return m
}

// migrate moves the slot of ch from the master holding its sharded subscription to another,
// as a resharding does (without keys to move), and returns both addresses.
func (m *masters) migrate(t *testing.T, ch string) (src, dst string) {
	t.Helper()
	for addr, c := range m.nodes {
		if c.PubSubShardNumSub(ctx, ch).Val()[ch] == 1 {
			src = addr
		} else if dst == "" {
			dst = addr
		}
	}
	if src == "" {
		t.Fatal("no master holds the sharded subscription")
	}
	slot := int(keySlot(ch))
	must := func(c *redis.Client, args ...any) {
		t.Helper()
		if err := c.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	must(m.nodes[dst], "CLUSTER", "SETSLOT", slot, "IMPORTING", m.ids[src])
	must(m.nodes[src], "CLUSTER", "SETSLOT", slot, "MIGRATING", m.ids[dst])
	for _, addr := range []string{dst, src} {
		must(m.nodes[addr], "CLUSTER", "SETSLOT", slot, "NODE", m.ids[dst])
	}
	for addr, c := range m.nodes {
		if addr != src && addr != dst {
			must(c, "CLUSTER", "SETSLOT", slot, "NODE", m.ids[dst])
		}
	}
	return src, dst
}

// pubsubClients returns, per master, the id of the one Pub/Sub client connected to it.
func (m *masters) pubsubClients(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for addr, c := range m.nodes {
		list := c.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Val().(string)
		lines := strings.Split(strings.TrimSpace(list), "\n")
		if len(lines) != 1 || lines[0] == "" {
			t.Fatalf("master %s has %d Pub/Sub clients, want 1:\n%s", addr, len(lines), list)
		}
		id, _, _ := strings.Cut(lines[0], " ")
		out[addr] = id
	}
	return out
}

// docs/DESIGN.md "Subscribe before open" on a cluster: when a topology rebuild reroutes a
// channel in the middle of a Subscribe, the caller follows the channel to the relay now
// serving it and returns only once that relay has it confirmed.
func TestSubscribeFollowsItsChannelAcrossAClusterRebuild(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true}, sink)
	const ch = "ws:rebuilt"
	r.mu.Lock()
	src := r.topo.addrs[r.topo.route(ch)]
	r.mu.Unlock()
	var srcNode, dstNode *redistest.Server
	for _, n := range cl.Nodes {
		switch {
		case n.Addr() == src:
			srcNode = n
		case dstNode == nil:
			dstNode = n
		}
	}

	// The master serving the channel stalls, so its SSUBSCRIBE is sent but not confirmed.
	thawSrc := srcNode.Freeze()
	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		long, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := r.Subscribe(long, []string{ch})
		done <- result{err, time.Now()}
	}()
	testenv.Eventually(t, 10*time.Second, "SSUBSCRIBE sent, unconfirmed", func() bool {
		r.mu.Lock()
		rl := r.relays[r.topo.route(ch)]
		r.mu.Unlock()
		rl.mu.Lock()
		defer rl.mu.Unlock()
		st, _ := rl.chans.Get(ch)
		return st != nil && st.onWire && st.acks > 0
	})
	// A rebuild routes the channel to another master (stalled too), as a topology loaded
	// in the middle of a migration does.
	thawDst := dstNode.Freeze()
	r.mu.Lock()
	moved := *r.topo
	moved.slot[keySlot(ch)] = uint8(slices.Index(moved.addrs, dstNode.Addr()))
	r.rebuildLocked(&moved)
	r.mu.Unlock()
	// The old master confirms; the channel is no longer its to confirm.
	thawSrc()
	select {
	case res := <-done:
		t.Fatalf("Subscribe returned (%v) before the relay now serving the channel confirmed it", res.err)
	case <-time.After(time.Second):
	}
	// The new master answers MOVED (the slot never left the old one); the relay reloads the
	// real topology and the channel moves back, where it is confirmed.
	thawed := time.Now()
	thawDst()
	res := <-done
	if res.err != nil {
		t.Fatalf("Subscribe across the rebuilds: %v", res.err)
	}
	if res.at.Before(thawed) {
		t.Fatal("Subscribe returned before the channel's relay could confirm it")
	}
	// Returned, so live: a message published now is delivered.
	pub, err := NewPublisher(cl.URL(), true, history.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, ch, []byte("after the rebuild")); err != nil {
		t.Fatal(err)
	}
	got := sink.waitFor(t, 1, 10*time.Second)
	if string(got[0].Payload) != "after the rebuild" {
		t.Fatalf("got %q", got[0].Payload)
	}
}

// References taken before the cluster's topology is loaded wait in the backplane, and move to
// the relays of their masters, counts and all, once it is: the channels are subscribed, and
// a reference dropped meanwhile is not counted.
func TestReferencesTakenBeforeTheTopologyMoveToTheRelays(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	r, err := NewRedis(RedisOptions{URL: cl.URL(), Cluster: true, Linger: -1}, newCollector())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	subscribed := make(chan error, 1)
	waitCtx, cancelWait := context.WithTimeout(ctx, 20*time.Second)
	defer cancelWait()
	go func() { subscribed <- r.Subscribe(waitCtx, []string{"ws:a", "ws:b"}) }()
	// A handshake that gives up before the topology is loaded drops its references.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = r.Subscribe(short, []string{"ws:a", "ws:c"})
	cancel()
	if err == nil {
		t.Fatal("subscriptions confirmed without a topology")
	}
	r.Unsubscribe([]string{"ws:a", "ws:c"})
	testenv.Eventually(t, 5*time.Second, "the references wait for the topology", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.waiting.active == 2 && len(r.waiting.chans) == 2
	})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-subscribed; err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	held := map[string]int32{}
	for _, rl := range r.relays {
		for _, h := range rl.held() {
			held[h.name] = h.n
		}
	}
	waiting, active := len(r.waiting.chans), r.active
	r.mu.Unlock()
	if waiting != 0 || active != 2 || len(held) != 2 || held["ws:a"] != 1 || held["ws:b"] != 1 {
		t.Fatalf("after the topology: %d waiting, %d active, relays hold %v; want 0, 2, ws:a and ws:b once each", waiting, active, held)
	}
}
