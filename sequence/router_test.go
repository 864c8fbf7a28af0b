package sequence

import (
	"fmt"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
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
