package bench

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestServerEnvDropsInheritedServiceVariables(t *testing.T) {
	t.Setenv("WEBSOCKET_SERVICE_ENGINE", "gws")
	t.Setenv("WEBSOCKET_SERVICE_MAX_CONNECTIONS", "5")
	env := serverEnv(map[string]string{"ENGINE": "epoll", "PORT": "1234"})
	var ours []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "WEBSOCKET_SERVICE_") {
			ours = append(ours, kv)
		}
	}
	slices.Sort(ours)
	if want := []string{"WEBSOCKET_SERVICE_ENGINE=epoll", "WEBSOCKET_SERVICE_PORT=1234"}; !slices.Equal(ours, want) {
		t.Fatalf("service variables %v, want %v", ours, want)
	}
}

func TestSuiteRedisStartsOnAFreePortAndStops(t *testing.T) {
	if _, err := lookRedis(); err != nil {
		t.Skip(err)
	}
	rs, err := startRedis(t.Context(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if rs.port == 6379 || !strings.HasPrefix(rs.url(), "redis://127.0.0.1:") || !rs.alive() {
		t.Fatalf("redis on %s alive %v", rs.url(), rs.alive())
	}
	rs.stop()
	if rs.alive() {
		t.Fatal("redis-server still running after stop")
	}
}

func TestSuiteStepsFitTheMachine(t *testing.T) {
	c := MachineCapacity()
	for _, full := range []bool{false, true} {
		for _, st := range steps(full) {
			p := st.params
			p.URL, p.Run, p.PublishVia, p.RedisURL = "ws://127.0.0.1:1/ws", "r", "redis", "redis://127.0.0.1:1/0"
			if err := p.Normalize(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if err := c.Check(peakOpen(&p), p.Procs, len(p.Src)); err != nil {
				t.Fatalf("%s (full %v): %v", st.name, full, err)
			}
		}
	}
}

// TestSuiteGroupFanOutComparesV1AndV2Clients runs the smallest group fan-out with v1 and v2
// clients on both engines: v2 clients get every message once, in frames they account for by
// stream and cursor, and the table sets v2 against v1.
func TestSuiteGroupFanOutComparesV1AndV2Clients(t *testing.T) {
	small := Params{Scenario: ScenarioClassroom, Groups: 2, Size: 5, Repeat: 20, Concurrency: 8,
		Wait: 30 * time.Second, Quiet: 3 * time.Second, Pipeline: 256}
	o := SuiteOptions{Engines: []string{"gws", "epoll"}, ServerBin: testServerBin(t), Rounds: 1, Protocol: protocolBoth,
		steps: []step{{name: "classroom", params: small}}}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	res, err := RunSuite(ctx, o, &progress)
	if err != nil {
		t.Fatalf("suite: %v\n%s", err, progress.String())
	}
	if want := []string{"classroom-v1", "classroom-v2"}; !slices.Equal(res.Steps, want) {
		t.Fatalf("steps %v, want %v", res.Steps, want)
	}
	for _, st := range res.Steps {
		for _, eng := range o.Engines {
			for _, r := range res.Reports[st][eng] {
				v2 := strings.HasSuffix(st, "-v2")
				if r.Delivered != 200 || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || len(r.Problems) > 0 ||
					r.PublishVia != "fcall" || (r.V2 != nil) != v2 || r.Server == nil {
					t.Errorf("%s on %s: delivered %d of 200, lost %d, dup %d, reordered %d, problems %v, via %s, v2 %+v",
						st, eng, r.Delivered, r.Lost, r.Duplicated, r.Reordered, r.Problems, r.PublishVia, r.V2)
				}
				if v2 && (r.V2.Syncs != 30 || r.V2.unrecoveredTotal() != 0 || len(r.ErrorFrames) > 0) {
					t.Errorf("%s on %s: %d syncs (want 3 per connection), recovered:false %v, other frames %v",
						st, eng, r.V2.Syncs, r.V2.Unrecovered, r.ErrorFrames)
				}
			}
		}
	}
	var table strings.Builder
	WriteTable(&table, res)
	if testing.Verbose() {
		t.Log("\n" + table.String())
	}
	if !strings.Contains(table.String(), "v2 vs v1 clients") || strings.Count(table.String(), "\nclassroom ") != 2 {
		t.Errorf("table:\n%s", table.String())
	}
}

// TestSuiteRefusesAStepItDoesNotHave: --only with a name the suite does not have (here the
// step --protocol both renamed) is an error naming the steps, not a run of nothing.
func TestSuiteRefusesAStepItDoesNotHave(t *testing.T) {
	small := Params{Scenario: ScenarioClassroom, Groups: 1, Size: 2, Repeat: 1, Concurrency: 1,
		Wait: 10 * time.Second, Quiet: time.Second, Pipeline: 16}
	o := SuiteOptions{Engines: []string{"epoll"}, ServerBin: testServerBin(t), Rounds: 1, Protocol: protocolBoth,
		Only: []string{"classroom"}, steps: []step{{name: "classroom", params: small}}}
	_, err := RunSuite(t.Context(), o, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "classroom-v1,classroom-v2") {
		t.Fatalf("RunSuite with --only classroom and --protocol both = %v, want an error naming classroom-v1,classroom-v2", err)
	}
}
