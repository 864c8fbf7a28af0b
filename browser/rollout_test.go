package browser

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/bench"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// TestChromiumPageResumesThroughARollout: a page in headless Chromium imports
// client/notifications-client.js as an ES module, takes its token from the page's own
// backend (a /token endpoint) and connects to node A of two service processes (the real
// binary) on one Redis, with the list of both nodes' URLs, as a deployment without a load
// balancer in front gives it — which also makes "the page moved to the other node" certain
// rather than up to a balancer. A publisher numbers the messages of the page's user, its group
// and the broadcast (FCALL ws_publish); node A is drained (SIGTERM); the page reconnects to B
// and resumes. At the end the page has every message of every stream exactly once, in order,
// and no recovered:false. In the second run Redis is restarted without persistence while the
// page is on A: every stream reports recovered:false with reason epoch, and no message is
// missing without such a report.
func TestChromiumPageResumesThroughARollout(t *testing.T) {
	node := requireBrowserTools(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		testenv.Missing(t, "redis-server not found: apt-get install redis-server")
	}
	bin := filepath.Join(t.TempDir(), "websocket-service")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/huleedu/websocket-service/cmd/websocket-service").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script, err := filepath.Abs("rollout.mjs")
	if err != nil {
		t.Fatal(err)
	}
	for _, engine := range []string{"epoll", "gws"} {
		for _, restart := range []bool{false, true} {
			name := engine + "/drain"
			if restart {
				name += "+redis-restart"
			}
			t.Run(name, func(t *testing.T) {
				o := bench.RolloutOptions{Clients: 1, Engine: engine, Drain: time.Second,
					RoundEvery: 50 * time.Millisecond, RoundsBefore: 20, RoundsAfter: 10, RestartRedis: restart,
					ClientOptions: map[string]any{"initialDelayMs": 250, "maxDelayMs": 2000},
					Driver:        []string{node, script}, Timeout: 20 * time.Second, ServerBin: bin}
				ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
				defer cancel()
				var progress strings.Builder
				res, err := bench.RunRollout(ctx, o, &progress)
				if err != nil {
					t.Fatalf("rollout: %v\n%s", err, progress.String())
				}
				var table strings.Builder
				bench.WriteRolloutTable(&table, []*bench.RolloutResult{res})
				t.Logf("%s\n%s%s", res.Report.UserAgent, progress.String(), table.String())
				if len(res.Problems) > 0 {
					t.Fatalf("problems: %q", res.Problems)
				}
				r := res.Report
				if r.Streams != 3 || r.Received == 0 || !strings.Contains(r.UserAgent, "Chrome") {
					t.Fatalf("%d streams, %d messages, user agent %q: want 3 streams of messages seen in Chromium", r.Streams, r.Received, r.UserAgent)
				}
				// (How many came in B's replay depends on the reconnect's jitter: logged, not judged.)
				if !restart && (r.Exact != 3 || r.RecoveredFalse != 0) {
					t.Errorf("%d of 3 streams exactly once in order, %d recovered:false; want 3 and 0", r.Exact, r.RecoveredFalse)
				}
				if restart && (r.StreamsWithLoss != 3 || r.Reasons["epoch"] < 3 || r.Silent != 0) {
					t.Errorf("recovered:false reasons %v, %d lost silently; want every one of the 3 streams told, with reason epoch, and none lost silently", r.Reasons, r.Silent)
				}
			})
		}
	}
}
