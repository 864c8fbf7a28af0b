package gwsengine

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// sink is a raw client that reads and throws away everything, into a buffer allocated up
// front so that it allocates nothing while a test counts allocations.
type sink struct {
	*rawClient
	bytes atomic.Int64
}

// sinkRig is a rig for sinks: no send-queue limit to trip, and a silence timeout far beyond
// any run. A sink never sends a frame, so under the default 60 s timeout the server rightly
// closes it 1001 for silence; a benchmark that stops its timer while it waits runs for minutes
// of wall time and would lose its sinks part-way ("372677 of 372678 frames written").
func sinkRig(t testing.TB) *rig {
	return newRig(t, func(o *session.Options) {
		o.SendQueueLimit = 1 << 30
		o.HeartbeatInterval = time.Hour
		o.ConnectionTimeout = 2 * time.Hour
	})
}

func dialSinks(t testing.TB, r *rig, n int, groups []string) []*sink {
	t.Helper()
	return dialSinksProto(t, r, n, groups, "")
}

// dialSinksProto is dialSinks offering subprotocol proto; notifications.v2 sinks send an
// empty resume and are returned once every one has its syncs (one per stream), so they are
// live.
func dialSinksProto(t testing.TB, r *rig, n int, groups []string, proto string) []*sink {
	t.Helper()
	tok := r.token("reader", groups, time.Hour)
	sinks := make([]*sink, n)
	sent := r.metrics.MessagesSent.Get()
	for i := range sinks {
		s := &sink{rawClient: dialRawProto(t, r, tok, 0, proto)}
		if proto == session.SubprotocolV2 {
			s.send(t, 0x81, []byte(`{"type":"resume","streams":{}}`))
		}
		buf := make([]byte, 128<<10)
		go func() {
			for {
				n, err := s.br.Read(buf)
				s.bytes.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
		sinks[i] = s
	}
	r.waitConns(n)
	if proto == session.SubprotocolV2 {
		waitSent(t, r, sent+uint64(n*(len(groups)+2)))
		r.endFloors()
	}
	return sinks
}

// endFloors ends, on every v2 connection, the checks of stale deliveries that follow a resume
// for resume.FloorTime, so that a benchmark measures the steady state.
func (r *rig) endFloors() {
	for _, s := range r.eng.shards {
		for _, c := range s.all(nil) {
			if v := c.v2; v != nil {
				v.mu.Lock()
				v.st.DropFloors()
				v.floors.Store(false)
				v.mu.Unlock()
			}
		}
	}
}

// waitSent waits until the engine has written want frames. Its failure names the
// connections that were closed meanwhile, the usual reason a frame is never written.
//
// A benchmark times this wait, so it spins (yielding) to see the last write at once; a test
// polls with a backoff instead (testenv.Until), so that on a loaded machine it does not take
// the processor from the write goroutines it waits for.
func waitSent(t testing.TB, r *rig, want uint64) {
	t.Helper()
	sent := func() bool { return r.metrics.MessagesSent.Get() >= want }
	ok := false
	if _, timed := t.(*testing.B); timed {
		for deadline := time.Now().Add(10 * time.Second); !ok && time.Now().Before(deadline); runtime.Gosched() {
			ok = sent()
		}
	} else {
		ok = testenv.Until(10*time.Second, sent)
	}
	if !ok {
		t.Fatalf("%d of %d frames written; %d connections closed meanwhile (close codes %v)",
			r.metrics.MessagesSent.Get(), want, r.hooks.count(), r.hooks.codes())
	}
}

// A payload is framed once for all its targets: delivering 64 KiB to 200 connections must
// not allocate anything like 200 copies of it.
func TestDeliverEncodesOncePerMessage(t *testing.T) {
	const targets, size = 200, 64 << 10
	r := sinkRig(t)
	sinks := dialSinks(t, r, targets, []string{"class"})
	payload := []byte(strings.Repeat("p", size))

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r.eng.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.Group, ID: "class"}, Payload: payload}})
	waitSent(t, r, targets)
	runtime.ReadMemStats(&after)

	allocated := after.TotalAlloc - before.TotalAlloc
	if perTarget := targets * size; allocated > uint64(perTarget)/8 {
		t.Errorf("delivering %d bytes to %d connections allocated %d bytes: frames are built per target", size, targets, allocated)
	}
	t.Logf("one %d-byte message to %d connections allocated %d bytes", size, targets, allocated)
	for _, s := range sinks {
		if !testenv.Until(5*time.Second, func() bool { return s.bytes.Load() >= size }) {
			t.Fatalf("a connection received %d bytes, want %d", s.bytes.Load(), size)
		}
	}
}

// BenchmarkDeliverGroupFanout1000 is one notification to a group of 1,000 connections, timed
// until every connection's frame has been written to its socket.
//
// The v2 run is the same to notifications.v2 connections (live, past their resume), with the
// message at a position: its frame, too, is built once per delivery.
func BenchmarkDeliverGroupFanout1000(b *testing.B) {
	for _, proto := range []string{session.Subprotocol, session.SubprotocolV2} {
		b.Run(proto, func(b *testing.B) { benchGroupFanout(b, proto) })
	}
}

func benchGroupFanout(b *testing.B, proto string) {
	const targets = 1000
	r := sinkRig(b)
	dialSinksProto(b, r, targets, []string{"class"}, proto)
	payload := []byte(`{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123","status":"completed"}}`)
	pos := history.Position{Epoch: 1, Seq: 1, Tag: 1}
	batch := []registry.Delivery{{Target: registry.Target{Kind: registry.Group, ID: "class"}, Payload: payload, Position: pos}}

	sent := r.metrics.MessagesSent.Get()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.eng.Deliver(batch)
		sent += targets
		waitSent(b, r, sent)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*targets), "ns/target")
}

// BenchmarkDeliverEnqueue is the cost Deliver itself adds to its caller (the backplane's
// receive loop) for 1,000 targets, the socket writes left to gws's write goroutines.
func BenchmarkDeliverEnqueue(b *testing.B) {
	for _, targets := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("targets=%d", targets), func(b *testing.B) {
			r := sinkRig(b)
			dialSinks(b, r, targets, []string{"class"})
			batch := []registry.Delivery{{Target: registry.Target{Kind: registry.Group, ID: "class"}, Payload: []byte(`{"type":"notification"}`)}}
			sent := r.metrics.MessagesSent.Get()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r.eng.Deliver(batch)
				sent += uint64(targets)
				b.StopTimer()
				waitSent(b, r, sent)
				b.StartTimer()
			}
		})
	}
}
