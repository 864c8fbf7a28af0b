package resume_test

import (
	"fmt"
	"testing"

	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/registry"
)

// A replay far larger than SEND_QUEUE_LIMIT reaches a client that reads: it is queued a chunk
// at a time as the socket drains, never all at once, so the client is not taken for a slow
// consumer. Tiny messages are the hard case: what each frame costs besides its bytes counts
// against the limit too.
func TestReplayLargerThanTheSendQueue(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, map[string]string{"SEND_QUEUE_LIMIT": "4096", "RECOVERY_MAX_MESSAGES": "1000", "HISTORY_SIZE": "1000"}).node(t)
		cur := freshCursors(t, s)
		const n = 600 // ~60 bytes a frame: ~36 KB of frames, and 600 frames' bookkeeping
		for i := range n {
			s.Publish(t, userT, fmt.Sprint(i))
		}
		routed(t, s)
		_, fs := userSync(t, s, cur)
		if len(fs) != n+1 || !fs[n].IsRecovered() || *fs[n].Replayed != n {
			t.Fatalf("got %d frames, last %s; want %d replayed then recovered", len(fs), fs[len(fs)-1].Raw, n)
		}
		for i := range n {
			if got := fs[i].DataString(); got != fmt.Sprint(i) {
				t.Fatalf("replay %d: %s", i, fs[i].Raw)
			}
		}
	})
}

// routed returns once s has routed every message published to it so far. The history holds a
// message as soon as its publish returns, but live delivery follows on the node's own time;
// a connection that opened while a burst was still being routed would hold the burst's live
// copies during its resume, and over SEND_QUEUE_LIMIT that is a slow consumer (1013) by
// design. A marker to another user, published last, is routed after all of them: the node
// routes messages in the order the backplane delivers them.
func routed(t *testing.T, s *servicetest.Service) {
	t.Helper()
	obs := dialV2(t, s, nil, "routed-marker")
	syncs(t, obs, "user", "broadcast")
	s.Publish(t, registry.Target{Kind: registry.User, ID: "routed-marker"}, "marker")
	if f := next(t, obs); f.DataString() != "marker" {
		t.Fatalf("marker connection got %s", f.Raw)
	}
	obs.Close()
	waitActive(t, s, 0)
}
