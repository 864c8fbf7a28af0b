package bench

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
)

// TestRolloutThroughTheReferenceClient is the load test at a size `make test` affords: 100
// reference clients (client/notifications-client.js in one Node process) on node A of two
// service processes on one Redis, a publisher numbering messages to every user, group and
// everyone; A is drained (SIGTERM) and every client resumes on B with every message exactly
// once, in order, and no recovered:false.
func TestRolloutThroughTheReferenceClient(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Missing(t, "node not found: apt-get install nodejs")
	}
	if _, err := lookRedis(); err != nil {
		testenv.Missing(t, err.Error())
	}
	o := RolloutOptions{Clients: 100, GroupSize: 10, Engine: "epoll", Drain: 2 * time.Second,
		RoundEvery: 100 * time.Millisecond, UserEvery: 2, RoundsBefore: 10, RoundsAfter: 10,
		ClientOptions: map[string]any{"initialDelayMs": 250, "maxDelayMs": 2000},
		Timeout:       20 * time.Second, ServerBin: testServerBin(t)}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var progress strings.Builder
	res, err := RunRollout(ctx, o, &progress)
	if err != nil {
		t.Fatalf("rollout: %v\n%s", err, progress.String())
	}
	var table strings.Builder
	WriteRolloutTable(&table, []*RolloutResult{res})
	t.Log("\n" + progress.String() + table.String())
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %q", res.Problems)
	}
	if r := res.Report; r.Streams != 300 || r.Exact != 300 || r.Replayed == 0 || res.PublishErrors != 0 {
		t.Errorf("%d streams, %d exact, %d replayed, %d publish errors; want 300, 300, some replayed (A's clients missed messages while reconnecting), 0",
			r.Streams, r.Exact, r.Replayed, res.PublishErrors)
	}
}

// TestRolloutChecksCatchLossRepeatsAndDisorder runs the unit tests of the rollout's per-stream
// checks (rollout-clients.test.mjs): a hole nobody reported is a silent loss, a hole after
// sync recovered:false is a loss the app was told of, repeats and disorder are counted.
func TestRolloutChecksCatchLossRepeatsAndDisorder(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found: apt-get install nodejs")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "rollout-clients.test.mjs")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "# fail 0") || strings.Contains(out.String(), "# pass 0") {
		t.Fatalf("node --test rollout-clients.test.mjs: %v\n%s", err, out.String())
	}
}
