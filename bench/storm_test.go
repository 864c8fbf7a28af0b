package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestReconnectStormSmallestConfiguration kills one of four service processes under a steady
// publisher and checks, end to end, that its clients all come back on the others, that the
// survivors' handshakes account for them, and that nobody else lost or got twice a message.
func TestReconnectStormSmallestConfiguration(t *testing.T) {
	res, progress := runTestStorm(t, 4, 8, ProtocolV1)
	if len(res.Runs) != 2 {
		t.Fatalf("%d storms, want one per engine", len(res.Runs))
	}
	for _, r := range res.Runs {
		rep, rc := r.Report, r.Report.Reconnect
		if len(r.Problems) > 0 || rc == nil {
			t.Errorf("%s: problems %v\n%s", r.Engine, r.Problems, progress.String())
			continue
		}
		if r.KilledConns != 10 || rc.Reconnected != 10 || r.AllBackSeconds <= 0 || r.LastReconnectSeconds <= 0 {
			t.Errorf("%s: killed node held %d, %d reconnected, all back after %.2fs, last reconnect after %.2fs",
				r.Engine, r.KilledConns, rc.Reconnected, r.AllBackSeconds, r.LastReconnectSeconds)
		}
		var handshakes, after int64
		for _, s := range r.Survivors {
			handshakes += s.Handshakes
			after += s.ConnsAfter
		}
		if len(r.Survivors) != 3 || handshakes != int64(rc.Reconnects) || after != 40 {
			t.Errorf("%s: %d survivors took %d handshakes for %d reconnects and hold %d connections, want 3, equal, 40",
				r.Engine, len(r.Survivors), handshakes, rc.Reconnects, after)
		}
		if rep.Duplicated != 0 || rep.Lost != rc.Lost || r.PublishedDuring <= 0 {
			t.Errorf("%s: duplicated %d, lost %d of which %d by reconnected clients, published during the storm %d",
				r.Engine, rep.Duplicated, rep.Lost, rc.Lost, r.PublishedDuring)
		}
	}
	var table strings.Builder
	WriteStormTable(&table, res)
	if testing.Verbose() {
		t.Log("\n" + table.String())
	}
	if !strings.Contains(table.String(), "scaled down") || strings.Contains(table.String(), "PROBLEM") {
		t.Errorf("storm table:\n%s", table.String())
	}
}

// runTestStorm runs the smallest storm on both engines: 10 connections on each of nodes,
// groups of groupSize fed 5 messages a second for 3 s, the last node killed after 1 s.
func runTestStorm(t *testing.T, nodes, groupSize int, protocol string) (*StormResult, *strings.Builder) {
	t.Helper()
	o := StormOptions{Nodes: nodes, ConnsPerNode: 10, Engines: []string{"gws", "epoll"}, Backend: BackendRedis,
		Protocol: protocol, GroupSize: groupSize, GroupRate: 5, Duration: 3 * time.Second, KillAfter: time.Second,
		Reconnect: ReconnectPolicy{Initial: 200 * time.Millisecond, Max: time.Second, Throttle: time.Second},
		ServerBin: testServerBin(t)}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	res, err := RunStorm(ctx, o, &progress)
	if err != nil {
		t.Fatalf("storm: %v\n%s", err, progress.String())
	}
	return res, &progress
}

// TestReconnectDelayIsCappedExponentialWithFullJitter: the reference client's backoff.
func TestReconnectDelayIsCappedExponentialWithFullJitter(t *testing.T) {
	pol := DefaultReconnectPolicy()
	top := func() float64 { return 0.999999 }
	bottom := func() float64 { return 0 }
	for attempt, ceiling := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		if d := pol.delay(attempt, false, top); d >= ceiling || d < ceiling*99/100 {
			t.Errorf("attempt %d: longest delay %s, want just under %s", attempt, d, ceiling)
		}
		if d := pol.delay(attempt, false, bottom); d != 0 {
			t.Errorf("attempt %d: shortest delay %s, want 0 (full jitter)", attempt, d)
		}
	}
	if d := pol.delay(100, false, top); d >= pol.Max {
		t.Errorf("attempt 100: delay %s over the cap %s", d, pol.Max)
	}
	if d := pol.delay(0, true, bottom); d != pol.Throttle {
		t.Errorf("throttled: delay %s, want the throttle floor %s", d, pol.Throttle)
	}
}

// TestResumeStormSmallestConfiguration: the v2 storm. The killed node's clients resume with
// their cursors on the survivors: each gets its sync, none loses or gets twice a message,
// no sync says recovered:false, and the table reports the resume figures.
func TestResumeStormSmallestConfiguration(t *testing.T) {
	res, progress := runTestStorm(t, 2, 5, ProtocolV2)
	if len(res.Runs) != 2 || res.MemoryLimitMiB <= 0 {
		t.Fatalf("%d storms, memory limit %d MiB; want one per engine and the deployment's limit", len(res.Runs), res.MemoryLimitMiB)
	}
	for _, r := range res.Runs {
		rep, rs := r.Report, r.Resume
		if len(r.Problems) > 0 || rs == nil || rep.V2 == nil {
			t.Errorf("%s: problems %v\n%s", r.Engine, r.Problems, progress.String())
			continue
		}
		if r.KilledConns != 10 || rs.Synced != 10 || rs.SyncAllSeconds <= 0 || rs.Recoveries < 10 {
			t.Errorf("%s: killed node held %d, %d synced after %.2fs, %d stream resumes; want 10, 10, >0, ≥10",
				r.Engine, r.KilledConns, rs.Synced, rs.SyncAllSeconds, rs.Recoveries)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.Delivered == 0 || rep.V2.unrecoveredTotal() != 0 {
			t.Errorf("%s: lost %d, duplicated %d, delivered %d, recovered:false %v", r.Engine, rep.Lost, rep.Duplicated,
				rep.Delivered, rep.V2.Unrecovered)
		}
		if len(r.Survivors) != 1 || r.Survivors[0].PeakKiB <= 0 {
			t.Errorf("%s: survivors %+v, want one with its peak memory", r.Engine, r.Survivors)
		}
	}
	var table strings.Builder
	WriteStormTable(&table, res)
	if testing.Verbose() {
		t.Log("\n" + table.String())
	}
	if !strings.Contains(table.String(), "per resuming client") || strings.Contains(table.String(), "PROBLEM") {
		t.Errorf("storm table:\n%s", table.String())
	}
}

// TestStormFlagsASurvivorOverTheMemoryLimit: the deployment's limit is read from
// k8s/deployment.yaml, and a survivor peaking above it is a problem of the storm.
func TestStormFlagsASurvivorOverTheMemoryLimit(t *testing.T) {
	limit, err := deploymentMemoryLimitMiB()
	if err != nil || limit <= 0 {
		t.Fatalf("limit %d MiB, %v", limit, err)
	}
	sr := StormRun{Survivors: []Survivor{{Node: 0, PeakKiB: limit * 1024}, {Node: 1, PeakKiB: limit*1024 + 1}}}
	if p := sr.overLimit(limit); len(p) != 1 || !strings.Contains(p[0], "survivor 1") {
		t.Errorf("problems %v, want survivor 1 only", p)
	}
	if _, err := parseMemoryLimitMiB([]byte("resources:\n  limits:\n    memory: 1Gi\n")); err != nil {
		t.Error(err)
	}
	if _, err := parseMemoryLimitMiB([]byte("limits:\n  memory: 512M\n")); err == nil {
		t.Error("512M (not Mi or Gi) accepted")
	}
}

// TestStormHoldsTheDeployedEngineToTheLimit: the limit is sized for the engine k8s/ runs (the
// default, epoll, while configmap.yaml sets none); another engine's survivors are reported only.
func TestStormHoldsTheDeployedEngineToTheLimit(t *testing.T) {
	eng, err := deploymentEngine()
	if err != nil || eng != "epoll" {
		t.Fatalf("deployed engine %q, %v; want epoll (k8s/configmap.yaml sets no engine)", eng, err)
	}
	if got := parseEngine([]byte("data:\n  WEBSOCKET_SERVICE_ENGINE: \"gws\"\n")); got != "gws" {
		t.Errorf("engine %q from a configmap setting gws", got)
	}
}
