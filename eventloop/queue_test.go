//go:build linux

package eventloop

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// queueTestLimit is the bound the queue tests give their shard instead of shardQueueBytes,
// so that filling it takes a few hundred small messages.
const queueTestLimit = 64 << 10

// lowerQueueLimit sets l's queue bound for a test (before any delivery).
func lowerQueueLimit(l *loop, n int64) {
	l.mu.Lock()
	l.queueLimit = n
	l.mu.Unlock()
}

// userBatch is one delivery of a 1 KiB payload numbered i to user.
func userBatch(user string, i int) []registry.Delivery {
	p := fmt.Sprintf("%06d%s", i, strings.Repeat("m", 1018))
	return []registry.Delivery{{Target: registry.Target{Kind: registry.User, ID: user}, Payload: []byte(p)}}
}

// metricValue is the value of the sample named exactly name in the metrics text ("" if none).
func metricValue(m *telemetry.Metrics, name string) string {
	var b strings.Builder
	m.WritePrometheus(&b)
	for line := range strings.Lines(b.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return v
		}
	}
	return ""
}

// A shard applies its queue on its own goroutine. If it falls behind (stalled here), Deliver
// must wait once the shard's queue holds its bound of bytes, instead of queueing without
// limit, so the backplane's reader stops reading Redis; and once the shard goes on, every
// message still arrives, in order.
func TestDeliverWaitsWhileAShardsQueueIsFull(t *testing.T) {
	stall := newGate(t)
	h := newFaultyHarness(t, func(o *session.Options) {
		o.Shards = 1
		o.SendQueueLimit = 64 << 20 // the client reads while the shard writes everything at once
	}, &faults{deliver: stall.hook})
	l := h.engine.loops[0]
	lowerQueueLimit(l, queueTestLimit)
	rc := h.dialRaw(t, "u", nil)

	batchSize := batchBytes(userBatch("u", 0))
	fits := int(queueTestLimit/batchSize) + 1 // admitted while below the bound
	total := 4 * fits
	stall.armed.Store(true)
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			h.engine.Deliver(userBatch("u", i))
			sent.Add(1)
		}
	}()
	<-stall.entered // the shard is stuck in the first batch
	testenv.Eventually(t, 10*time.Second, "Deliver to fill the queue", func() bool { return sent.Load() >= int64(fits) })
	// Deliver must now be waiting: give it time to go on if it would.
	time.Sleep(200 * time.Millisecond)
	if n := sent.Load(); n > int64(fits)+1 {
		t.Fatalf("Deliver returned %d times while the shard was stalled, want it to wait after about %d (%d bytes queued, bound %d)",
			n, fits, l.queued.Load(), queueTestLimit)
	}
	if q := metricValue(h.metrics, `eventloop_shard_queue_bytes{shard="0"}`); q == "" || mustAtoi(t, q) > queueTestLimit+batchSize {
		t.Fatalf("eventloop_shard_queue_bytes = %q, want at most the bound plus one batch (%d)", q, queueTestLimit+batchSize)
	}
	stall.unstall()
	for i := range total {
		op, payload := rc.expectFrame(10 * time.Second)
		if want := fmt.Sprintf("%06d", i); op != opText || string(payload[:6]) != want {
			t.Fatalf("message %d: op %d, starts %q, want %q", i, op, payload[:6], want)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Deliver still waits after the shard caught up")
	}
	testenv.Eventually(t, 10*time.Second, "the queue to empty", func() bool { return l.queued.Load() == 0 })
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("metric value %q: %v", s, err)
	}
	return n
}

// A Deliver waiting for room in a shard that stops must not wait forever: what the shard will
// never apply (queued behind its stop, or offered after it) is dropped and counted (reason
// shard_stopped), and Deliver returns.
func TestStoppingShardReleasesAWaitingDeliver(t *testing.T) {
	stall := newGate(t)
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, &faults{deliver: stall.hook})
	l := h.engine.loops[0]
	lowerQueueLimit(l, queueTestLimit)
	stall.armed.Store(true)
	h.engine.Deliver(userBatch("nobody", 0))
	<-stall.entered // the shard is stuck in the first batch
	closed := make(chan struct{})
	go func() { _ = h.engine.Close(); close(closed) }()
	testenv.Eventually(t, 10*time.Second, "the stop to be queued", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.queue) == 1
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range int(queueTestLimit/batchBytes(userBatch("nobody", 0))) + 3 {
			h.engine.Deliver(userBatch("nobody", i+1))
		}
	}()
	testenv.Eventually(t, 10*time.Second, "Deliver to fill the queue behind the stop", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.queued.Load() >= l.queueLimit
	})
	stall.unstall()
	for _, ch := range []chan struct{}{done, closed} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("Deliver or Close is stuck behind a stopped shard")
		}
	}
	h.engine.Deliver(userBatch("nobody", -1)) // refused at once
	if v := metricValue(h.metrics, `websocket_messages_dropped_total{reason="shard_stopped"}`); v == "" || mustAtoi(t, v) < 2 {
		t.Fatalf(`websocket_messages_dropped_total{reason="shard_stopped"} = %q, want the batches behind the stop counted`, v)
	}
	if q := l.queued.Load(); q != 0 {
		t.Fatalf("%d bytes still counted queued on a stopped shard", q)
	}
}
