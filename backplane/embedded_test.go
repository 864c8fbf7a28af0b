package backplane

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/telemetry"
)

func startEmbedded(t *testing.T, opts EmbeddedOptions, sink Sink) *Embedded {
	t.Helper()
	if opts.Metrics == nil {
		opts.Metrics = telemetry.New()
	}
	e, err := NewEmbedded(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Ready(); err == nil {
		t.Fatal("ready before Start")
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.Ready(); err != nil {
		t.Fatalf("not ready after Start: %v", err)
	}
	return e
}

func TestEmbeddedPublishReachesSubscribedSink(t *testing.T) {
	sink := newCollector()
	e := startEmbedded(t, EmbeddedOptions{}, sink)
	if err := e.Subscribe(ctx, []string{"ws:alice"}); err != nil {
		t.Fatal(err)
	}
	payload := []byte("hello")
	if err := e.Publish(ctx, "ws:alice", payload); err != nil {
		t.Fatal(err)
	}
	payload[0] = 'X' // the caller may reuse its buffer
	got := sink.waitFor(t, 1, time.Second)
	if got[0].Channel != "ws:alice" || string(got[0].Payload) != "hello" {
		t.Fatalf("got %q %q", got[0].Channel, got[0].Payload)
	}
	if e.m.BackplaneReceived.Get() != 1 || e.m.BackplaneSubscriptions.Get() != 1 {
		t.Fatalf("received %d, active %v", e.m.BackplaneReceived.Get(), e.m.BackplaneSubscriptions.Get())
	}
}

func TestEmbeddedUnsubscribedChannelIsNotDelivered(t *testing.T) {
	sink := newCollector()
	e := startEmbedded(t, EmbeddedOptions{Linger: -1}, sink)
	if err := e.Subscribe(ctx, []string{"ws:a", "ws:b"}); err != nil {
		t.Fatal(err)
	}
	e.Unsubscribe([]string{"ws:b"})
	for _, ch := range []string{"ws:never", "ws:b", "ws:a"} {
		if err := e.Publish(ctx, ch, []byte(ch)); err != nil {
			t.Fatal(err)
		}
	}
	// One queue, one dispatcher: ws:a, published last, reaches the sink after anything
	// published before it, so once it arrived ws:b would have too.
	sink.waitFor(t, 1, time.Second)
	if got, _ := sink.snapshot(); len(got) != 1 || got[0].Channel != "ws:a" {
		t.Fatalf("delivered %v, want only ws:a", got)
	}
}

func TestEmbeddedReferencesAndLinger(t *testing.T) {
	sink := newCollector()
	linger := 300 * time.Millisecond
	e := startEmbedded(t, EmbeddedOptions{Linger: linger}, sink)
	holds := func(ch string) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.refs.held(ch)
	}
	held := func() bool { return holds("ws:u") }
	_ = e.Subscribe(ctx, []string{"ws:u"})
	_ = e.Subscribe(ctx, []string{"ws:u"})
	e.Unsubscribe([]string{"ws:u"})
	e.Unsubscribe([]string{"ws:u"})
	if !held() {
		t.Fatal("released at once despite the linger")
	}
	_ = e.Subscribe(ctx, []string{"ws:u"}) // back within the linger
	lingerEnds(t, e, func(ch string) bool { return !holds(ch) })
	if !held() {
		t.Fatal("re-referenced channel expired")
	}
	e.Unsubscribe([]string{"ws:u"})
	testenv.Eventually(t, 10*time.Second, "released after the linger", func() bool { return !held() })
}

func TestEmbeddedKeepsPublishOrderInBatches(t *testing.T) {
	sink := newCollector()
	e := startEmbedded(t, EmbeddedOptions{}, sink)
	chans := []string{"ws:o1", "ws:o2", "ws:o3"}
	_ = e.Subscribe(ctx, chans)
	const total = 10000
	var wg sync.WaitGroup
	for _, ch := range chans { // one publisher per channel, concurrently
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < total/len(chans); i++ {
				if err := e.Publish(ctx, ch, []byte(strconv.Itoa(i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := total / len(chans) * len(chans)
	got := sink.waitFor(t, want, 5*time.Second)
	last := map[string]int{}
	for _, m := range got {
		seq, _ := strconv.Atoi(string(m.Payload))
		if prev, ok := last[m.Channel]; ok && seq != prev+1 {
			t.Fatalf("%s: message %d after %d", m.Channel, seq, prev)
		}
		last[m.Channel] = seq
	}
	_, batches := sink.snapshot()
	t.Logf("%d messages in %d batches", want, batches)
}

func TestEmbeddedCloseRefusesFurtherUse(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{}, newCollector())
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e.Ready() == nil || e.Subscribe(ctx, []string{"x"}) == nil || e.Publish(ctx, "x", nil) == nil {
		t.Fatal("closed embedded backplane still usable")
	}
}
