package sequence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// fixture is a router over an in-memory history, and a publisher on one channel.
type fixture struct {
	t      *testing.T
	mem    *history.Memory
	rec    *recorder
	router *Router
}

func newFixture(t *testing.T, limits history.Limits, limit int) *fixture {
	mem, err := history.NewMemory(limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	return &fixture{t: t, mem: mem, rec: rec, router: New(Options{Topics: testTopics, History: mem, Limit: limit}, rec)}
}

// publish appends to the history and returns the message as it arrives live.
func (f *fixture) publish(ch, payload string) backplane.Message {
	e := f.mem.Append(ch, []byte(payload), "")
	return backplane.Message{Channel: ch, Payload: e.Payload, Position: e.Position, Prev: e.Prev}
}

func (f *fixture) output(ch string) string {
	f.t.Helper()
	awaitIdle(f.t, f.router)
	tg, _ := testTopics.Parse(ch)
	return describe(f.rec.stream(tg))
}

func TestResumedSubscriptionOverTheLimitIsAGap(t *testing.T) {
	f := newFixture(t, history.Limits{Size: 100, TTL: time.Minute}, 3)
	ch := "ws-group:class7"
	f.router.Deliver([]backplane.Message{f.publish(ch, "a")})
	for range 4 {
		f.publish(ch, "lost")
	}
	first := f.rec.stream(f.router.streams[ch].target)[0]
	f.router.Subscriptions([]backplane.Subscription{{Channel: ch, Change: backplane.Resumed}})
	e := first.Position.Epoch % 1000
	if got, want := f.output(ch), fmt.Sprintf(" %d.1 [gap limit 4 to %d.5]", e, e); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestJumpIsRepairedInOrderBeforeLaterMessages(t *testing.T) {
	f := newFixture(t, history.Limits{Size: 100, TTL: time.Minute}, 100)
	ch := "ws:ann"
	first := f.publish(ch, "1")
	f.publish(ch, "2") // lost on the wire
	f.publish(ch, "3")
	fourth := f.publish(ch, "4")
	f.router.Deliver([]backplane.Message{first, fourth, {Channel: ch, Payload: []byte("plain")}, f.publish(ch, "5")})
	e := first.Position.Epoch % 1000
	if got, want := f.output(ch), fmt.Sprintf(" %d.1 %d.2 %d.3 %d.4 plain %d.5", e, e, e, e, e); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTrimmedHoleIsAGapRightBeforeTheNextMessage(t *testing.T) {
	f := newFixture(t, history.Limits{Size: 2, TTL: time.Minute}, 100)
	ch := "ws:ann"
	first := f.publish(ch, "1")
	for range 4 {
		f.publish(ch, "lost")
	}
	f.router.Deliver([]backplane.Message{first, {Channel: ch, Payload: []byte("plain")}, f.publish(ch, "6")})
	e := first.Position.Epoch % 1000
	// The plain message went out before the node could know of the hole: 6 revealed it.
	if got, want := f.output(ch), fmt.Sprintf(" %d.1 plain [gap trimmed 4 to %d.5] %d.6", e, e, e); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// discard is an Engine that keeps nothing.
type discard struct{ n int }

func (d *discard) Deliver(batch []registry.Delivery) { d.n += len(batch) }

// BenchmarkRouteInOrder is the hot path: sequenced messages arriving in order, in batches as
// the relay hands them over (see backplane's BenchmarkDispatch). Each costs a map lookup and a
// few comparisons; the only allocation is the batch handed to the engine.
func BenchmarkRouteInOrder(b *testing.B) {
	const batchSize = 64
	ch := "ws-group:class7"
	payload := []byte(`{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123","status":"completed"}}`)
	eng := &discard{}
	r := New(Options{Topics: testTopics}, eng)
	batch := make([]backplane.Message, batchSize)
	var prev uint32
	seq := uint64(0)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for done := 0; done < b.N; done += batchSize {
		n := min(batchSize, b.N-done)
		for i := range n {
			seq++
			tag := uint32(seq*2654435761) | 1
			batch[i] = backplane.Message{Channel: ch, Payload: payload, Position: history.Position{Epoch: 7, Seq: seq, Tag: tag}, Prev: prev}
			prev = tag
		}
		r.Deliver(batch[:n])
	}
	b.StopTimer()
	if eng.n != b.N {
		b.Fatalf("delivered %d of %d", eng.n, b.N)
	}
}

func TestUnknownChannelsAreDroppedAndCountedTheRestDelivered(t *testing.T) {
	m := telemetry.New()
	rec := newRecorder()
	r := New(Options{Topics: testTopics, Metrics: m}, rec)
	r.Deliver([]backplane.Message{{Channel: "ws:u1", Payload: []byte("a")}, {Channel: "elsewhere", Payload: []byte("b")}, {Channel: "ws-broadcast", Payload: []byte("c")}})
	if got := describe(rec.stream(registry.Target{Kind: registry.User, ID: "u1"})) + describe(rec.stream(registry.Target{Kind: registry.Broadcast})); got != " a c" {
		t.Fatalf("delivered %q", got)
	}
	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), `websocket_messages_dropped_total{reason="unknown_channel"} 1`) {
		t.Fatal("the unknown channel was not counted")
	}
}

// promText renders metrics in the Prometheus text format.
type promText struct{ m *telemetry.Metrics }

func (p *promText) String() string {
	var b bytes.Buffer
	p.m.WritePrometheus(&b)
	return b.String()
}

// grepMetric returns the value of the sample named name in text, "" when absent.
func grepMetric(text, name string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// stuckHistory is a history that never answers until its reader gives up.
type stuckHistory struct{ reads chan struct{} }

func (s stuckHistory) Read(ctx context.Context, _ string, _ history.Position, _ int) (history.Result, error) {
	s.reads <- struct{}{}
	<-ctx.Done()
	return history.Result{Reason: history.ReasonUnavailable, Missed: -1}, ctx.Err()
}

// TestStuckRepairIsGivenUpOverTheHeldBound: while a stream's history read hangs, its later
// messages are held without holding up the caller (other streams flow on); past the held
// bound the repair is given up: a gap where the hole is, then the held messages, in order.
func TestStuckRepairIsGivenUpOverTheHeldBound(t *testing.T) {
	mem, err := history.NewMemory(history.Limits{Size: 100, TTL: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	stuck := stuckHistory{reads: make(chan struct{}, 1)}
	r := New(Options{Topics: testTopics, History: stuck, Limit: 100, HeldBytes: 100}, rec)
	f := &fixture{t: t, mem: mem, rec: rec, router: r}
	ch := "ws:ann"
	first := f.publish(ch, "1")
	f.publish(ch, "2") // lost on the wire
	r.Deliver([]backplane.Message{first, f.publish(ch, "3")})
	<-stuck.reads // the repair is reading
	r.Deliver([]backplane.Message{{Channel: "ws:bob", Payload: []byte("other streams flow")}})
	if got := describe(rec.stream(registry.Target{Kind: registry.User, ID: "bob"})); got != " other streams flow" {
		t.Fatalf("another stream got%q while one was repaired", got)
	}
	r.Deliver([]backplane.Message{{Channel: ch, Payload: []byte("plain")}, f.publish(ch, strings.Repeat("x", 100))})
	e := first.Position.Epoch % 1000
	want := fmt.Sprintf(" %d.1 [gap unavailable 1 to %d.2] %d.3 plain %d.4", e, e, e, e)
	if got := f.output(ch); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// downHistory is a history that fails every read, as an unreachable Redis does, until it is
// brought back; each failed read is signalled on failed.
type downHistory struct {
	mem    *history.Memory
	mu     sync.Mutex
	down   bool
	failed chan struct{}
}

func (d *downHistory) Read(ctx context.Context, ch string, after history.Position, limit int) (history.Result, error) {
	d.mu.Lock()
	down := d.down
	d.mu.Unlock()
	if down {
		select {
		case d.failed <- struct{}{}:
		default:
		}
		return history.Result{Reason: history.ReasonUnavailable, Missed: -1}, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	}
	return d.mem.Read(ctx, ch, after, limit)
}

// awaitFailure waits for a read to fail.
func (d *downHistory) awaitFailure(t *testing.T) {
	t.Helper()
	select {
	case <-d.failed:
	case <-time.After(10 * time.Second):
		t.Fatal("no read of the unreachable history (the repair gave up?)")
	}
}

func (d *downHistory) setDown(v bool) {
	d.mu.Lock()
	d.down = v
	d.mu.Unlock()
}

// TestRepairWaitsForAnUnreachableHistoryAndRepairsWhenResumed: a subscription resumes while
// Redis is still unreachable, so the repair's reads fail; that is no answer about the stream.
// When the relay reports the channel resumed again (Redis is back), the repair reads again and
// delivers what was missed: no gap, nothing lost, in order with the messages held meanwhile.
func TestRepairWaitsForAnUnreachableHistoryAndRepairsWhenResumed(t *testing.T) {
	mem, err := history.NewMemory(history.Limits{Size: 100, TTL: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	hist := &downHistory{mem: mem, failed: make(chan struct{}, 1)}
	// An outage far longer than the test: only the resumption may end the wait.
	r := New(Options{Topics: testTopics, History: hist, Limit: 100, Outage: time.Hour}, rec)
	f := &fixture{t: t, mem: mem, rec: rec, router: r}
	ch := "ws:ann"
	first := f.publish(ch, "1")
	r.Deliver([]backplane.Message{first})
	f.publish(ch, "2") // lost while the Pub/Sub connection was down
	f.publish(ch, "3")
	hist.setDown(true)
	r.Subscriptions([]backplane.Subscription{{Channel: ch, Change: backplane.Resumed}})
	hist.awaitFailure(t) // the repair found Redis unreachable
	hist.awaitFailure(t) // and tried again, still unreachable, without giving up
	r.Deliver([]backplane.Message{f.publish(ch, "4")})
	hist.setDown(false)
	r.Subscriptions([]backplane.Subscription{{Channel: ch, Change: backplane.Resumed}})
	r.Deliver([]backplane.Message{f.publish(ch, "5")})
	e := first.Position.Epoch % 1000
	want := fmt.Sprintf(" %d.1 %d.2 %d.3 %d.4 %d.5", e, e, e, e, e)
	if got := f.output(ch); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
