package backplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

var ctx = context.Background()

func TestPublishReachesSubscribedSink(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL()}, sink)
	if err := r.Subscribe(ctx, []string{"ws:alice"}); err != nil {
		t.Fatal(err)
	}
	// Subscribe returned, so the subscription is live: a publish now must arrive.
	if err := r.Publish(ctx, "ws:alice", []byte(`{"type":"notification"}`)); err != nil {
		t.Fatal(err)
	}
	got := sink.waitFor(t, 1, 5*time.Second)
	if got[0].Channel != "ws:alice" || string(got[0].Payload) != `{"type":"notification"}` {
		t.Fatalf("got %q %q", got[0].Channel, got[0].Payload)
	}
	if n := r.m.BackplaneReceived.Get(); n != 1 {
		t.Fatalf("backplane_messages_received_total = %d, want 1", n)
	}
}

func TestUnsubscribedChannelIsNotDelivered(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL(), Linger: -1, PubSubConns: 1}, sink)
	if err := r.Subscribe(ctx, []string{"ws:a", "ws:b"}); err != nil {
		t.Fatal(err)
	}
	r.Unsubscribe([]string{"ws:b"})
	probe := srv.Client(t)
	testenv.Eventually(t, 5*time.Second, "ws:b unsubscribed on redis", func() bool {
		return probe.PubSubNumSub(ctx, "ws:b").Val()["ws:b"] == 0
	})
	for _, ch := range []string{"ws:never", "ws:b", "ws:a"} {
		if err := r.Publish(ctx, ch, []byte(ch)); err != nil {
			t.Fatal(err)
		}
	}
	// ws:a was published last and, with one Pub/Sub connection, reaches the sink after
	// anything published before it: once it arrived, ws:b would have too.
	sink.waitFor(t, 1, 5*time.Second)
	got, _ := sink.snapshot()
	if len(got) != 1 || got[0].Channel != "ws:a" {
		t.Fatalf("delivered %v, want only ws:a", got)
	}
}

func TestReferencesAndLingerKeepTheRedisSubscription(t *testing.T) {
	srv := redistest.Start(t)
	probe := srv.Client(t)
	linger := 500 * time.Millisecond
	// One Pub/Sub connection: UNSUBSCRIBEs reach Redis in the order the sweep issues them,
	// which lingerEnds relies on.
	r := startRedis(t, RedisOptions{URL: srv.URL(), Linger: linger, PubSubConns: 1}, newCollector())
	numsub := func() int64 { return probe.PubSubNumSub(ctx, "ws:u").Val()["ws:u"] }
	unsubscribed := func(ch string) bool { return probe.PubSubNumSub(ctx, ch).Val()[ch] == 0 }

	// Two connections of one user: one Redis subscription, kept while either holds it.
	for i := 0; i < 2; i++ {
		if err := r.Subscribe(ctx, []string{"ws:u"}); err != nil {
			t.Fatal(err)
		}
	}
	r.Unsubscribe([]string{"ws:u"})
	lingerEnds(t, r, unsubscribed)
	if n := numsub(); n != 1 {
		t.Fatalf("NUMSUB with one reference left = %d, want 1", n)
	}
	if a := r.m.BackplaneSubscriptions.Get(); a != 1 {
		t.Fatalf("backplane_subscriptions_active = %v, want 1", a)
	}

	// The last reference goes; the client reconnects within the linger (at once: how soon
	// does not matter, only that it is before the linger ends).
	probe.ConfigResetStat(ctx)
	r.Unsubscribe([]string{"ws:u"})
	if err := r.Subscribe(ctx, []string{"ws:u"}); err != nil {
		t.Fatal(err)
	}
	lingerEnds(t, r, unsubscribed)
	if n := numsub(); n != 1 {
		t.Fatalf("NUMSUB after re-subscribing within the linger = %d, want 1", n)
	}
	info := probe.Info(ctx, "commandstats").Val()
	if calls := commandCalls(info, "unsubscribe"); calls != 1 {
		t.Fatalf("UNSUBSCRIBE sent %d times, want once (for lingerEnds' sentinel only)", calls)
	}

	// Gone for good: unsubscribed once the linger has passed.
	r.Unsubscribe([]string{"ws:u"})
	if n := numsub(); n != 1 {
		t.Fatalf("NUMSUB right after the last release = %d, want 1 (lingering)", n)
	}
	testenv.Eventually(t, 10*linger, "unsubscribed after the linger", func() bool { return numsub() == 0 })
	if a := r.m.BackplaneSubscriptions.Get(); a != 0 {
		t.Fatalf("backplane_subscriptions_active = %v, want 0", a)
	}
}

// commandCalls reads calls=N of cmdstat_<name> from INFO commandstats.
func commandCalls(info, name string) int {
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+name+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		return n
	}
	return 0
}

func TestSubscribesAreCoalescedIntoFewCommands(t *testing.T) {
	srv := redistest.Start(t)
	probe := srv.Client(t)
	r := startRedis(t, RedisOptions{URL: srv.URL()}, newCollector())
	probe.ConfigResetStat(ctx)

	// One call with 2,000 channels: two connections, 512 channels per command at most.
	many := make([]string, 2000)
	for i := range many {
		many[i] = fmt.Sprintf("ws:bulk-%d", i)
	}
	if err := r.Subscribe(ctx, many); err != nil {
		t.Fatal(err)
	}
	if calls := commandCalls(probe.Info(ctx, "commandstats").Val(), "subscribe"); calls > 6 {
		t.Fatalf("2,000 channels in one call took %d SUBSCRIBE commands, want at most 6", calls)
	}

	// 1,000 clients arriving at once: their subscriptions share commands.
	probe.ConfigResetStat(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Subscribe(ctx, []string{fmt.Sprintf("ws:user-%d", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	calls := commandCalls(probe.Info(ctx, "commandstats").Val(), "subscribe")
	t.Logf("1,000 concurrent Subscribe calls → %d SUBSCRIBE commands", calls)
	if calls >= 500 {
		t.Fatalf("1,000 concurrent subscriptions took %d SUBSCRIBE commands", calls)
	}
	if n := len(probe.PubSubChannels(ctx, "ws:user-*").Val()); n != 1000 {
		t.Fatalf("PUBSUB CHANNELS lists %d user channels, want 1000", n)
	}
}

func TestPerChannelOrderIsKeptFor10000Messages(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL()}, sink)
	chans := []string{"ws:o1", "ws:o2", "ws:o3", "ws:o4", "ws-broadcast"}
	if err := r.Subscribe(ctx, chans); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(srv.URL(), false, history.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const total = 10000
	msgs := make([]Message, total)
	for i := range msgs {
		msgs[i] = Message{Channel: chans[i%len(chans)], Payload: []byte(strconv.Itoa(i))}
	}
	if err := pub.PublishMany(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	got := sink.waitFor(t, total, 10*time.Second)
	last := map[string]int{}
	for _, m := range got {
		seq, _ := strconv.Atoi(string(m.Payload))
		if prev, ok := last[m.Channel]; ok && seq <= prev {
			t.Fatalf("%s: message %d after %d", m.Channel, seq, prev)
		}
		last[m.Channel] = seq
	}
	_, batches := sink.snapshot()
	t.Logf("10,000 messages in %d batches", batches)
	if len(got) != total {
		t.Fatalf("got %d messages, want %d", len(got), total)
	}
}

func TestRedisOutageReportsNotReadyThenResubscribes(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL()}, sink)
	if err := r.Subscribe(ctx, []string{"ws:x", "ws-group:g"}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// The relay drops its connection (Ready fails at once), then reports it, which sets the
	// gauge: both within moments.
	testenv.Eventually(t, 5*time.Second, "not ready and backplane_connected 0 during the outage", func() bool {
		return r.Ready() != nil && r.m.BackplaneConnected.Get() == 0
	})
	t.Logf("Ready during the outage: %v", r.Ready())
	began := r.m.BackplaneDisconnectedSince.Get()
	if lag := time.Since(time.Unix(0, int64(began*1e9))); began == 0 || lag < 0 || lag > 5*time.Second {
		t.Fatalf("backplane_disconnected_since_timestamp_seconds = %v during an outage that began under 5 s ago", began)
	}
	// Subscribing while down cannot be confirmed: it fails when its context ends, and the
	// reference it took (kept here) is subscribed at reconnect.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := r.Subscribe(short, []string{"ws:late"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("subscribe while down = %v, want the context's deadline", err)
	}
	time.Sleep(time.Second) // the outage itself: Redis is down, nothing to wait for
	srv.Restart()
	testenv.Eventually(t, 10*time.Second, "ready after restart", func() bool { return r.Ready() == nil })

	probe := srv.Client(t)
	testenv.Eventually(t, 5*time.Second, "subscriptions restored", func() bool {
		n := probe.PubSubNumSub(ctx, "ws:x", "ws-group:g", "ws:late").Val()
		return n["ws:x"] == 1 && n["ws-group:g"] == 1 && n["ws:late"] == 1
	})
	for _, ch := range []string{"ws:x", "ws-group:g", "ws:late"} {
		if err := r.Publish(ctx, ch, []byte("after")); err != nil {
			t.Fatal(err)
		}
	}
	sink.waitFor(t, 3, 5*time.Second)
	if n := r.m.BackplaneReconnects.Get(); n == 0 {
		t.Fatal("backplane_reconnects_total not incremented")
	}
	if r.m.BackplaneConnected.Get() != 1 {
		t.Fatal("backplane_connected is not 1 after the restart")
	}
	// The outage lasted at least the 1.5 s spent in it above.
	if s := r.m.BackplaneDisconnectedSeconds.Get(); s < 1.5 {
		t.Fatalf("backplane_disconnected_seconds_total = %v after an outage of more than 1.5 s", s)
	}
	if since := r.m.BackplaneDisconnectedSince.Get(); since != 0 {
		t.Fatalf("backplane_disconnected_since_timestamp_seconds = %v once connected, want 0", since)
	}
}

func TestAtMostFourConnectionsFor1000Users(t *testing.T) {
	srv := redistest.Start(t)
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr(), ClientName: "probe"})
	defer probe.Close()
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL()}, sink)
	var wg sync.WaitGroup
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("ws:user-%d", i)
			if err := r.Subscribe(ctx, []string{user, "ws-broadcast"}); err != nil {
				t.Error(err)
				return
			}
			if err := r.Publish(ctx, user, []byte("hi")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sink.waitFor(t, 1000, 10*time.Second)
	list := probe.ClientList(ctx).Val()
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.Contains(line, "name=probe ") {
			n++
		}
	}
	t.Logf("CLIENT LIST: %d backplane connections for 1,000 users", n)
	if n > 4 {
		t.Fatalf("%d connections to redis, want at most 4:\n%s", n, list)
	}
}

// backplane is server.Backplane, restated: importing package server would create a cycle.
type backplane interface {
	Subscribe(ctx context.Context, channels []string) error
	Unsubscribe(channels []string)
	Publish(ctx context.Context, channel string, payload []byte) error
	Ready() error
	Close() error
}

var (
	_ backplane = (*Redis)(nil)
	_ backplane = (*Embedded)(nil)
)

func TestSubscribeWaitsForConfirmationAndRespectsContext(t *testing.T) {
	srv := redistest.Start(t)
	r := startRedis(t, RedisOptions{URL: srv.URL(), Linger: -1}, newCollector())
	probe := srv.Client(t)
	// Redis holds every command (our SUBSCRIBE included) for a second.
	if err := probe.Do(ctx, "CLIENT", "PAUSE", 1000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Subscribe(short, []string{"ws:paused"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe during CLIENT PAUSE = %v after %s, want the context's deadline", err, time.Since(start))
	}
	// The caller drops the references after a failure, as the server does.
	r.Unsubscribe([]string{"ws:paused"})
	if a := r.m.BackplaneSubscriptions.Get(); a != 0 {
		t.Fatalf("backplane_subscriptions_active = %v after the failed subscribe was released", a)
	}

	// Without a deadline it waits out the pause and returns once the channel is live.
	_ = probe.Do(ctx, "CLIENT", "PAUSE", 300, "ALL").Err()
	start = time.Now()
	if err := r.Subscribe(ctx, []string{"ws:later"}); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("Subscribe returned after %s, before Redis could confirm", waited)
	}
	if probe.PubSubNumSub(ctx, "ws:later").Val()["ws:later"] != 1 {
		t.Fatal("Subscribe returned but the channel is not subscribed on Redis")
	}
}

func TestCloseEndsEverySubscription(t *testing.T) {
	srv := redistest.Start(t)
	probe := srv.Client(t)
	r, err := NewRedis(RedisOptions{URL: srv.URL()}, newCollector())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "ready", func() bool { return r.Ready() == nil })
	if err := r.Subscribe(ctx, []string{"ws:c1", "ws:c2"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "no subscriptions left on redis", func() bool {
		return len(probe.PubSubChannels(ctx, "*").Val()) == 0
	})
	if r.Ready() == nil || r.Subscribe(ctx, []string{"x"}) == nil || r.Publish(ctx, "x", nil) == nil {
		t.Fatal("closed backplane still usable")
	}
}

func TestStartWithRedisDownRetriesUntilItComes(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	sink := newCollector()
	r, err := NewRedis(RedisOptions{URL: srv.URL()}, sink)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start with redis down: %v", err)
	}
	// Waits for Redis to come and confirm the channel.
	subscribed := make(chan error, 1)
	go func() { subscribed <- r.Subscribe(ctx, []string{"ws:early"}) }()
	testenv.Eventually(t, 2*time.Second, "not ready", func() bool { return r.Ready() != nil })
	srv.Restart()
	if err := <-subscribed; err != nil {
		t.Fatalf("Subscribe with redis down at start: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "ready once redis is up", func() bool { return r.Ready() == nil })
	probe := srv.Client(t)
	testenv.Eventually(t, 5*time.Second, "subscribed", func() bool {
		return probe.PubSubNumSub(ctx, "ws:early").Val()["ws:early"] == 1
	})
	if err := r.Publish(ctx, "ws:early", []byte("x")); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, 1, 5*time.Second)
}

// BenchmarkRedisPublishToSink measures the whole relay against a real redis-server: pipelined
// PUBLISH → Redis → Pub/Sub connection → parse → batch → sink. One op is one message.
func BenchmarkRedisPublishToSink(b *testing.B) {
	srv := redistest.Start(b)
	var mu sync.Mutex
	got := 0
	done := make(chan struct{}, 1)
	want := 0
	sink := SinkFunc(func(batch []Message) {
		mu.Lock()
		got += len(batch)
		if got >= want {
			select {
			case done <- struct{}{}:
			default:
			}
		}
		mu.Unlock()
	})
	r := startRedis(b, RedisOptions{URL: srv.URL()}, sink)
	chans := []string{"ws:b1", "ws:b2", "ws:b3", "ws:b4"}
	if err := r.Subscribe(ctx, chans); err != nil {
		b.Fatal(err)
	}
	pub, err := NewPublisher(srv.URL(), false, history.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	payload := []byte(`{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123"}}`)
	msgs := make([]Message, b.N)
	for i := range msgs {
		msgs[i] = Message{Channel: chans[i%len(chans)], Payload: payload}
	}
	mu.Lock()
	want = b.N
	mu.Unlock()
	b.ReportAllocs()
	b.ResetTimer()
	if err := pub.PublishMany(ctx, msgs); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatal("messages not all delivered")
	}
}
