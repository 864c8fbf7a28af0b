package backplane

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// collector is a Sink that remembers everything delivered.
type collector struct {
	mu      sync.Mutex
	msgs    []Message
	batches int
	arrived chan struct{} // capacity 1: something arrived
}

func newCollector() *collector { return &collector{arrived: make(chan struct{}, 1)} }

func (c *collector) Deliver(batch []Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, batch...)
	c.batches++
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

func (c *collector) snapshot() ([]Message, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.msgs...), c.batches
}

// waitFor waits until at least n messages arrived and returns all of them.
func (c *collector) waitFor(t testing.TB, n int, within time.Duration) []Message {
	t.Helper()
	deadline := time.After(within)
	for {
		msgs, _ := c.snapshot()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-c.arrived:
		case <-deadline:
			t.Fatalf("got %d messages within %s, want %d", len(msgs), within, n)
		}
	}
}

// startRedis makes a started Redis backplane, closed when the test ends, and waits until it
// is ready.
func startRedis(t testing.TB, opts RedisOptions, sink Sink) *Redis {
	t.Helper()
	if opts.Metrics == nil {
		opts.Metrics = telemetry.New()
	}
	r, err := NewRedis(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	testenv.Eventually(t, 10*time.Second, "backplane ready", func() bool { return r.Ready() == nil })
	return r
}

// lingerEnds waits until a linger beginning now has ended and the backplane's sweep has acted
// on it, without guessing how long that takes on a loaded machine: it takes and drops a
// reference on a sentinel channel nobody else holds and waits until released reports the
// sentinel gone. The sweep expires channels in the order they were released
// (lingerQueue.expire; the Redis backplane sweeps every relay's queue at the same time), so
// every channel released before this call has by then been dealt with: expired, or kept
// because it was referenced again.
func lingerEnds(t testing.TB, b backplane, released func(ch string) bool) {
	t.Helper()
	sentinel := "ws:linger-sentinel-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := b.Subscribe(context.Background(), []string{sentinel}); err != nil {
		t.Fatal(err)
	}
	b.Unsubscribe([]string{sentinel})
	testenv.Eventually(t, 10*time.Second, "the sentinel channel expired after its linger", func() bool {
		return released(sentinel)
	})
}
