package backplane

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// A Redis stall (a fork of a large dataset, an fsync, a CPU-starved host; here SIGSTOP) of
// 4 s is not an outage: the Pub/Sub connections stay, and every message published meanwhile
// (Redis executes it when it resumes) reaches the sink.
func TestRedisStallOfFourSecondsLosesNothing(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL()}, sink)
	chans := []string{"ws:s1", "ws:s2", "ws:s3", "ws-broadcast"}
	if err := r.Subscribe(ctx, chans); err != nil {
		t.Fatal(err)
	}
	pub := srv.PublishSteadily(t, 5*time.Millisecond, chans...)
	sink.waitFor(t, 20, 10*time.Second)
	thaw := srv.Freeze()
	time.Sleep(4 * time.Second) // the stall itself: nothing to wait for, Redis is stopped
	thaw()
	// Publishing goes on after the stall until well past any reconnect backoff.
	after := pub.Published() + 200
	testenv.Eventually(t, 20*time.Second, "200 more messages published after the stall", func() bool {
		return pub.Published() >= after
	})
	n := pub.Stop()
	if missing := missingSequence(sink, n, 10*time.Second); len(missing) > 0 {
		t.Fatalf("%d of %d messages lost across a 4 s stall, from %d", len(missing), n, missing[0])
	}
	if c := r.m.BackplaneReconnects.Get(); c != 0 {
		t.Fatalf("backplane_reconnects_total = %d: a 4 s stall was taken for a dead connection", c)
	}
}

// missingSequence waits up to within for the payloads "0" … "n-1" and returns those that
// did not arrive.
func missingSequence(c *collector, n int, within time.Duration) []int {
	deadline := time.After(within)
	for {
		seen := make([]bool, n)
		for _, m := range mustSnapshot(c) {
			if i, err := strconv.Atoi(string(m.Payload)); err == nil && i >= 0 && i < n {
				seen[i] = true
			}
		}
		var missing []int
		for i, ok := range seen {
			if !ok {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-c.arrived:
		case <-deadline:
			return missing
		}
	}
}

func mustSnapshot(c *collector) []Message {
	msgs, _ := c.snapshot()
	return msgs
}

// While the Pub/Sub connection is down, Subscribe does not report success: it fails when its
// context ends, or succeeds once the channel is confirmed on the reconnected connection.
func TestSubscribeDuringAnOutageSucceedsOnlyOnceConfirmed(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL(), Linger: -1}, sink)
	srv.Stop()
	testenv.Eventually(t, 10*time.Second, "not ready during the outage", func() bool { return r.Ready() != nil })

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := r.Subscribe(short, []string{"ws:refused"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe during the outage = %v, want the context's deadline", err)
	}
	r.Unsubscribe([]string{"ws:refused"})

	// A caller that can wait: it returns once Redis is back and has confirmed the channel.
	long, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var subErr error
	returned := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		subErr = r.Subscribe(long, []string{"ws:patient"})
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatalf("Subscribe returned (%v) while Redis is down", subErr)
	case <-time.After(time.Second):
	}
	srv.Restart()
	wg.Wait()
	if subErr != nil {
		t.Fatalf("Subscribe across the restart: %v", subErr)
	}
	// Returned, so live: a message published now is delivered. The command pool may still
	// answer with its last dial error for up to a second after Redis is back (go-redis stops
	// dialing after PoolSize failures and probes once a second), which a publisher retries.
	var pubErr error
	if !testenv.Until(10*time.Second, func() bool {
		pubErr = r.Publish(ctx, "ws:patient", []byte("after"))
		return pubErr == nil
	}) {
		t.Fatalf("publish after the restart: %v", pubErr)
	}
	got := sink.waitFor(t, 1, 10*time.Second)
	if string(got[0].Payload) != "after" {
		t.Fatalf("got %q", got[0].Payload)
	}
}

// startShortTolerance starts a Redis backplane whose Pub/Sub connections are presumed dead
// after tolerance of silence instead of stallTolerance, so a test can cross it quickly.
func startShortTolerance(t *testing.T, url string, tolerance time.Duration, sink Sink) *Redis {
	t.Helper()
	r, err := NewRedis(RedisOptions{URL: url}, sink)
	if err != nil {
		t.Fatal(err)
	}
	for _, rl := range r.relays {
		rl.tolerance = tolerance
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	testenv.Eventually(t, 10*time.Second, "backplane ready", func() bool { return r.Ready() == nil })
	return r
}

// heldSink holds up its first delivery for hold, as an engine applying back-pressure holds
// the relay's reader.
type heldSink struct {
	*collector
	once sync.Once
	hold time.Duration
}

func (s *heldSink) Deliver(batch []Message) {
	s.once.Do(func() { time.Sleep(s.hold) }) // the back-pressure itself, not a wait
	s.collector.Deliver(batch)
}

// The reader's silence deadline runs only while it waits for Redis: a reader held up by its
// own sink for longer than the tolerance, while Redis keeps sending, keeps its connection and
// loses nothing.
func TestReaderHeldUpByItsSinkIsNotTakenForASilentRedis(t *testing.T) {
	srv := redistest.Start(t)
	// Twice the ping interval, so that pings alone keep an idle connection alive; the sink
	// holds the reader for two and a half times that.
	sink := &heldSink{collector: newCollector(), hold: 5 * time.Second}
	r := startShortTolerance(t, srv.URL(), 2*time.Second, sink)
	chans := []string{"ws:h1", "ws:h2", "ws-broadcast"}
	if err := r.Subscribe(ctx, chans); err != nil {
		t.Fatal(err)
	}
	pub := srv.PublishSteadily(t, 5*time.Millisecond, chans...)
	sink.waitFor(t, 1, 10*time.Second) // the first delivery was held up and has ended
	after := pub.Published() + 200
	testenv.Eventually(t, 20*time.Second, "200 more messages published", func() bool {
		return pub.Published() >= after
	})
	n := pub.Stop()
	if missing := missingSequence(sink.collector, n, 10*time.Second); len(missing) > 0 {
		t.Fatalf("%d of %d messages lost while the sink held the reader, from %d", len(missing), n, missing[0])
	}
	if c := r.m.BackplaneReconnects.Get(); c != 0 {
		t.Fatalf("backplane_reconnects_total = %d: a reader held up by its sink was taken for a silent Redis", c)
	}
}

// A connection silent for longer than the tolerance is still given up and replaced.
func TestConnectionSilentBeyondTheToleranceIsReplaced(t *testing.T) {
	srv := redistest.Start(t)
	r := startShortTolerance(t, srv.URL(), 300*time.Millisecond, newCollector())
	thaw := srv.Freeze()
	testenv.Eventually(t, 10*time.Second, "pubsub connection replaced", func() bool {
		return r.m.BackplaneReconnects.Get() > 0
	})
	thaw()
	testenv.Eventually(t, 10*time.Second, "ready after the stall", func() bool { return r.Ready() == nil })
	if err := r.Subscribe(ctx, []string{"ws:back"}); err != nil {
		t.Fatal(err)
	}
}

// A channel already subscribed is not reported live to a new caller while its connection has
// gone silent (pinged, no answer): Redis may be dead, and a connection opened on the strength
// of that subscription would miss its messages. The caller waits; once Redis answers again
// it succeeds.
func TestSubscribeToALiveChannelWaitsWhileItsConnectionIsSilent(t *testing.T) {
	srv := redistest.Start(t)
	r := startRedis(t, RedisOptions{URL: srv.URL()}, newCollector())
	live := []string{"ws:live"}
	if err := r.Subscribe(ctx, live); err != nil {
		t.Fatal(err)
	}
	thaw := srv.Freeze()
	testenv.Eventually(t, 10*time.Second, "Subscribe to a live channel refused while Redis is silent", func() bool {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		err := r.Subscribe(short, live)
		r.Unsubscribe(live)
		return errors.Is(err, context.DeadlineExceeded)
	})
	done := make(chan error, 1)
	go func() {
		long, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done <- r.Subscribe(long, live)
	}()
	thaw()
	if err := <-done; err != nil {
		t.Fatalf("Subscribe once Redis answers again: %v", err)
	}
}

// A reader held up by its sink is not silence: a live channel stays live for new callers.
func TestSubscribeToALiveChannelIsImmediateWhileTheReaderIsHeldUp(t *testing.T) {
	srv := redistest.Start(t)
	held := make(chan struct{})
	release := make(chan struct{})
	sink := SinkFunc(func([]Message) {
		select {
		case <-held:
		default:
			close(held)
			<-release // the back-pressure itself
		}
	})
	r := startRedis(t, RedisOptions{URL: srv.URL(), PubSubConns: 1}, sink)
	live := []string{"ws:held", "ws:other"}
	if err := r.Subscribe(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, "ws:held", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-held
	defer close(release)
	// Held for well over the silence that would make the channel unconfirmable.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := r.Subscribe(short, live)
		cancel()
		r.Unsubscribe(live)
		if err != nil {
			t.Fatalf("Subscribe to live channels while the reader is held by its sink: %v", err)
		}
		// The pace of the attempts over the hold, not a wait: what is under test is that every
		// attempt, early or late in the hold, succeeds.
		time.Sleep(200 * time.Millisecond)
	}
}
