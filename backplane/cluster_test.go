package backplane

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
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

	nodes := map[string]*redis.Client{}
	ids := map[string]string{}
	for _, addr := range cl.Addrs() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		nodes[addr] = c
		ids[addr] = c.Do(ctx, "CLUSTER", "MYID").Val().(string)
	}
	slot := int(keySlot(ch))
	var src, dst string
	for addr, c := range nodes {
		if c.PubSubShardNumSub(ctx, ch).Val()[ch] == 1 {
			src = addr
		} else if dst == "" {
			dst = addr
		}
	}
	if src == "" {
		t.Fatal("no master holds the sharded subscription")
	}
	must := func(c *redis.Client, args ...any) {
		t.Helper()
		if err := c.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	must(nodes[dst], "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
	must(nodes[src], "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
	for _, addr := range []string{dst, src} {
		must(nodes[addr], "CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
	}
	for addr, c := range nodes {
		if addr != src && addr != dst {
			must(c, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
		}
	}

	eventually(t, 10*time.Second, "subscription moved to the new master", func() bool {
		return nodes[dst].PubSubShardNumSub(ctx, ch).Val()[ch] == 1
	})
	if err := nodes[dst].SPublish(ctx, ch, "after migration").Err(); err != nil {
		t.Fatal(err)
	}
	got := sink.waitFor(t, 1, 5*time.Second)
	if string(got[len(got)-1].Payload) != "after migration" {
		t.Fatalf("got %q", got[len(got)-1].Payload)
	}
	eventually(t, 5*time.Second, "ready after the migration", func() bool { return r.Ready() == nil })
}
