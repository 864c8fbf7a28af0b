package gwsengine

import (
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// The limit bounds what waits behind the frame being written: an idle connection takes a
// frame of any size, what follows it is counted without it, and written frames settle in order.
func TestSendQueueExcludesTheFrameBeingWritten(t *testing.T) {
	const limit = 1000
	var q sendQueue
	if !q.admit(5000, limit) {
		t.Fatal("an idle connection refused a frame larger than the limit")
	}
	if !q.admit(600, limit) || !q.admit(400, limit) {
		t.Fatal("frames behind the large one refused while within the limit")
	}
	if q.admit(1, limit) {
		t.Fatal("a frame past the limit behind the one being written was admitted")
	}
	if q.fits(1, limit) {
		t.Fatal("fits reports room in a full queue")
	}
	q.settle() // the large frame is written; the 600 is being written now
	if !q.admit(600, limit) {
		t.Fatal("refused although 400 bytes wait behind the frame being written")
	}
	for range 3 {
		q.settle()
	}
	q.settle() // one too many: harmless
	if q.total != 0 || q.head != 0 || len(q.costs) != 0 {
		t.Fatalf("after settling everything: total %d head %d len %d", q.total, q.head, len(q.costs))
	}
}

// A burst's bookkeeping is released once the queue is empty again.
func TestSendQueueReleasesABurstsBookkeeping(t *testing.T) {
	var q sendQueue
	for range 10 * keepCosts {
		q.admit(1, 1<<30)
	}
	for range 10 * keepCosts {
		q.settle()
	}
	if cap(q.costs) > keepCosts {
		t.Fatalf("an empty queue keeps an array of %d", cap(q.costs))
	}
}

// What the engine queues besides deliveries counts against SendQueueLimit like any frame (the
// epoll engine's TestHeartbeatPingsAndClosesStayWithinTheLimit): on a queue that has no room
// left for an empty frame, a heartbeat ping, the echo of an inbound message and a token
// refresh's auth_ok each close the connection 1013 (SLOW_CONSUMER) instead of growing it.
func TestPingsAndRepliesCountAgainstTheSendQueueLimit(t *testing.T) {
	const limit = 64 << 10
	for _, tc := range []struct {
		name string
		due  func(t *testing.T, r *rig, c *conn, client *rawClient)
	}{
		{"heartbeat ping", func(t *testing.T, r *rig, c *conn, client *rawClient) {
			c.shard.mu.Lock() // the ticker reads nextPing under it
			c.nextPing = 0    // due at the next sweep, within a second
			c.shard.mu.Unlock()
		}},
		{"echo", func(t *testing.T, r *rig, c *conn, client *rawClient) {
			client.send(t, 0x81, []byte("not a request: echoed"))
		}},
		{"token refresh", func(t *testing.T, r *rig, c *conn, client *rawClient) {
			client.send(t, 0x81, []byte(`{"type":"auth","token":"`+r.token("full", nil, time.Hour)+`"}`))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(o *session.Options) { o.SendQueueLimit = limit })
			client := dialRaw(t, r, r.token("full", nil, time.Hour), 4096) // reads nothing
			r.waitConns(1)
			c := r.eng.snapshot()[0]
			// gws's writer blocks in this frame (more than the kernel buffers hold), so what
			// is queued behind it stays queued.
			r.deliver(registry.User, "full", strings.Repeat("B", 8<<20))
			for i := 0; c.out.fits(frameOverhead, limit); i++ {
				if i > limit/frameOverhead {
					t.Fatalf("%d empty frames queued and the queue still has room", i)
				}
				r.deliver(registry.User, "full", "")
			}
			if c.closing() {
				t.Fatal("closed while within the limit")
			}
			tc.due(t, r, c, client)
			if cl := r.hooks.wait(t, 10*time.Second); cl.code != message.CloseTryAgainLater {
				t.Fatalf("closed %d, want 1013", cl.code)
			}
			var m strings.Builder
			r.metrics.WritePrometheus(&m)
			if !strings.Contains(m.String(), "\nwebsocket_messages_dropped_total{reason=\"slow_consumer\"} 1\n") {
				t.Fatalf("want one slow_consumer drop:\n%s", m.String())
			}
		})
	}
}
