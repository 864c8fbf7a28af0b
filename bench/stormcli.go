package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteStormTable prints the storms as Markdown: one row per engine, then each survivor.
func WriteStormTable(w io.Writer, res *StormResult) {
	fmt.Fprintf(w, "reconnect storm %s, %d nodes × %d %s connections, one killed (SIGKILL)\n", res.Date, res.Nodes, res.ConnsPerNode, res.Protocol)
	if res.Note != "" {
		fmt.Fprintf(w, "(%s)\n", res.Note)
	}
	fmt.Fprintln(w, "\n| engine | backplane | killed node held | all back after s | last reconnect after s | reconnect p99 ms | failed redials | published meanwhile | to each group | lost by reconnected | lost per reconnected (max) | lost by others | dup |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range res.Runs {
		rep := r.Report
		rc := rep.Reconnect
		if rc == nil {
			rc = &ReconnectReport{}
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.2f | %.2f | %.1f | %d | %d | %.1f | %d | %.1f (%d) | %d | %d |\n",
			r.Engine, r.Backend, r.KilledConns, r.AllBackSeconds, r.LastReconnectSeconds, rc.Handshake.P99, rc.RedialFailures,
			r.PublishedDuring, r.PerGroupDuring, rc.Lost, ratio(float64(rc.Lost), float64(rc.Reconnected)), rc.MaxLost,
			rep.Lost-rc.Lost, rep.Duplicated)
	}
	writeResumeTable(w, res)
	fmt.Fprintf(w, "\n| engine | survivor | conns before | conns after | handshakes | handshakes/s | server µs/handshake (with delivery) | peak MiB (VmHWM; limit %d, for %s) |\n", res.MemoryLimitMiB, res.MemoryLimitEngine)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range res.Runs {
		for _, s := range r.Survivors {
			fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %.0f | %.0f | %.1f |\n", r.Engine, s.Node, s.ConnsBefore, s.ConnsAfter,
				s.Handshakes, s.HandshakesSec, s.CPUPerHandshakeUs, float64(s.PeakKiB)/1024)
		}
	}
	for _, r := range res.Runs {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "PROBLEM storm on %s: %s\n", r.Engine, p)
		}
	}
}

// writeResumeTable is the v2 storm's resume figures, one row per engine.
func writeResumeTable(w io.Writer, res *StormResult) {
	if res.Protocol != ProtocolV2 {
		return
	}
	fmt.Fprintln(w, "\n| engine | resumed clients synced | all synced after s | stream resumes | redis commands (beyond publishing) | per resuming client | by command, per client | recovered:false |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|---|")
	for _, r := range res.Runs {
		if rs := r.Resume; rs != nil {
			fmt.Fprintf(w, "| %s | %d of %d | %.2f | %d | %d | %.2f | %s | %d %v |\n", r.Engine, rs.Synced, r.KilledConns,
				rs.SyncAllSeconds, rs.Recoveries, rs.RedisCommands, rs.RedisCommandsPerClient,
				perClient(rs.RedisCommandsByName, r.KilledConns),
				(&V2Report{Unrecovered: rs.Unrecovered}).unrecoveredTotal(), rs.Unrecovered)
		}
	}
}

// runStormCommand is `wsbench storm`.
func runStormCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := StormOptions{Reconnect: DefaultReconnectPolicy()}
	var engines string
	fs.IntVar(&o.Nodes, "nodes", 4, "service processes; the last one is killed")
	fs.IntVar(&o.ConnsPerNode, "conns-per-node", 2500, "connections per node before the kill (make bench-storm: 12000, four nodes of which three take the killed one's share under the 20,000-descriptor limit)")
	fs.StringVar(&engines, "engines", "gws,epoll", "engines, one storm each")
	fs.StringVar(&o.Backend, "backend", BackendRedis, "backplane: redis or cluster")
	fs.StringVar(&o.Protocol, "protocol", ProtocolV1, "clients' protocol: v1 (a reconnect starts afresh) or v2 (publishes with FCALL ws_publish; clients resume with their cursors)")
	fs.IntVar(&o.GroupSize, "group-size", 50, "members per group (spread over every node)")
	fs.Float64Var(&o.GroupRate, "group-rate", 1, "messages per second to each group, steadily")
	fs.DurationVar(&o.Duration, "duration", 15*time.Second, "how long the publisher runs")
	fs.DurationVar(&o.KillAfter, "kill-after", 4*time.Second, "when, into the publishing, the node is killed")
	fs.DurationVar(&o.Reconnect.Initial, "backoff-initial", o.Reconnect.Initial, "ceiling of the first reconnect delay (full jitter below it)")
	fs.DurationVar(&o.Reconnect.Max, "backoff-max", o.Reconnect.Max, "ceiling of any reconnect delay")
	fs.DurationVar(&o.Reconnect.Throttle, "backoff-throttle", o.Reconnect.Throttle, "added after a 503 or 429 refusal")
	harnessFlags(fs, &o.Procs, &o.ServerBin, &o.RedisServer, &o.JSONOut)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Engines = strings.Split(engines, ",")
	if o.ConnsPerNode < 1 || o.GroupSize < 1 || o.GroupRate <= 0 || o.Duration <= 0 || o.Reconnect.Initial <= 0 || o.Reconnect.Max < o.Reconnect.Initial {
		fmt.Fprintln(stderr, "wsbench storm: --conns-per-node, --group-size, --group-rate, --duration and --backoff-initial must be above 0, --backoff-max at least --backoff-initial")
		return 2
	}
	res, err := RunStorm(ctx, o, stderr)
	if res != nil && len(res.Runs) > 0 {
		WriteStormTable(stdout, res)
		writeJSON(o.JSONOut, res, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbench storm: %v\n", err)
		return 2
	}
	for _, r := range res.Runs {
		if len(r.Problems) > 0 {
			return 1
		}
	}
	return 0
}
