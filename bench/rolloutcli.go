package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// WriteRolloutTable prints the rollouts as Markdown, one row each.
func WriteRolloutTable(w io.Writer, runs []*RolloutResult) {
	fmt.Fprintln(w, "| engine | clients | Redis restarted | streams | exactly once, in order | messages | replayed on B | recovered:false (reasons) | lost, told | lost silently | dup | out of order | all resumed after ms (p50, p99) | A exited after s |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|")
	for _, r := range runs {
		rep := r.Report
		if rep == nil {
			rep = &RolloutReport{}
		}
		fmt.Fprintf(w, "| %s | %d | %v | %d | %d | %d | %d | %d %v | %d | %d | %d | %d | %.0f (%.0f, %.0f) | %.2f |\n",
			r.Engine, r.Clients, r.RestartRedis, rep.Streams, rep.Exact, rep.Received, rep.Replayed, rep.RecoveredFalse, rep.Reasons,
			rep.Covered, rep.Silent, rep.Duplicates, rep.OutOfOrder, r.ResumeAllMs, r.ResumeP50Ms, r.ResumeP99Ms, r.AExitSeconds)
	}
	for _, r := range runs {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "PROBLEM rollout on %s: %s\n", r.Engine, p)
		}
	}
}

// runRolloutCommand is `wsbench rollout`.
func runRolloutCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench rollout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o RolloutOptions
	var engines, jsonOut string
	var restart bool
	var initial, maxDelay time.Duration
	fs.IntVar(&o.Clients, "clients", 1000, "reference clients (client/notifications-client.js in one Node process)")
	fs.IntVar(&o.GroupSize, "group-size", 25, "members per group")
	fs.StringVar(&engines, "engines", "epoll,gws", "engines, one rollout each")
	fs.DurationVar(&o.Drain, "drain", 5*time.Second, "node A's SHUTDOWN_DRAIN_TIMEOUT")
	fs.DurationVar(&o.RoundEvery, "round-every", 200*time.Millisecond, "publisher period: a message to every group and to everyone each round")
	fs.IntVar(&o.UserEvery, "user-every", 5, "a message to each user every this many rounds")
	fs.IntVar(&o.RoundsBefore, "rounds-before", 20, "rounds before the drain")
	fs.IntVar(&o.RoundsAfter, "rounds-after", 20, "rounds after every client resumed")
	fs.BoolVar(&restart, "restart-redis", false, "also restart Redis without persistence half-way to the drain (every stream must report recovered:false)")
	fs.DurationVar(&initial, "backoff-initial", time.Second, "the client's initialDelayMs")
	fs.DurationVar(&maxDelay, "backoff-max", 30*time.Second, "the client's maxDelayMs")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "bound of each wait")
	fs.StringVar(&o.ServerBin, "server-bin", "", "prebuilt websocket-service binary (default: go build ./cmd/websocket-service)")
	fs.StringVar(&o.RedisServer, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&jsonOut, "json-out", "", "also write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.RestartRedis = restart
	o.ClientOptions = map[string]any{"initialDelayMs": initial.Milliseconds(), "maxDelayMs": maxDelay.Milliseconds()}
	var runs []*RolloutResult
	code := 0
	for _, eng := range strings.Split(engines, ",") {
		o.Engine = strings.TrimSpace(eng)
		res, err := RunRollout(ctx, o, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "wsbench rollout on %s: %v\n", o.Engine, err)
			return 1
		}
		if len(res.Problems) > 0 {
			code = 1
		}
		runs = append(runs, res)
	}
	WriteRolloutTable(stdout, runs)
	if jsonOut != "" {
		b, _ := json.MarshalIndent(runs, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			fmt.Fprintf(stderr, "write %s: %v\n", jsonOut, err)
			return 1
		}
	}
	return code
}
