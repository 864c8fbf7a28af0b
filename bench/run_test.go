package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func fakeParams(f *fakeServer, scenario string) Params {
	return Params{
		Scenario: scenario, URL: f.wsURL(), APIURL: f.srv.URL + "/api/publish", APIKey: fakeKey,
		PublishVia: "api", Tokens: TokenOptions{Secret: fakeSecret},
		Wait: 5 * time.Second, Quiet: time.Second, Concurrency: 16,
	}
}

func run(t *testing.T, p Params) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, p)
	if err != nil {
		t.Fatalf("Run(%s): %v", p.Scenario, err)
	}
	return rep
}

func TestFanoutCountsEveryDeliveryOnce(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioFanout)
	p.Conns, p.Users, p.Messages = 60, 20, 205
	rep := run(t, p)
	// 205 messages over 20 users, each user has 3 connections.
	if rep.Expected != 205*3 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicated != 0 {
		t.Fatalf("expected %d delivered %d lost %d dup %d, want 615/615/0/0; problems %v",
			rep.Expected, rep.Delivered, rep.Lost, rep.Duplicated, rep.Problems)
	}
	if len(rep.Problems) != 0 {
		t.Fatalf("problems in a clean run: %v", rep.Problems)
	}
	if rep.Latency.Count != rep.Delivered || rep.DeliveredPerSec <= 0 {
		t.Fatalf("latency count %d, deliveries/s %.0f", rep.Latency.Count, rep.DeliveredPerSec)
	}
}

func TestDroppedConsumerIsReportedAsLoss(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioFanout)
	p.Conns, p.Messages, p.Drop = 10, 200, 2 // 20 messages per connection, published in a burst
	rep := run(t, p)
	if rep.Dropped != 2 {
		t.Fatalf("dropped %d, want 2", rep.Dropped)
	}
	// Each dropped consumer goes away after 10 of its 20 messages and reads no more.
	if rep.Lost != 20 || rep.Delivered+rep.Lost != rep.Expected {
		t.Fatalf("lost %d delivered %d expected %d (problems %v)", rep.Lost, rep.Delivered, rep.Expected, rep.Problems)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), "lost") {
		t.Fatalf("loss not among the problems: %v", rep.Problems)
	}
}

func TestDuplicatesAreCounted(t *testing.T) {
	f := newFakeServer(t)
	f.duplicate = true
	p := fakeParams(f, ScenarioBroadcast)
	p.Conns, p.Repeat = 5, 3
	rep := run(t, p)
	if rep.Delivered != 15 || rep.Duplicated != 15 || rep.Lost != 0 {
		t.Fatalf("delivered %d dup %d lost %d, want 15/15/0", rep.Delivered, rep.Duplicated, rep.Lost)
	}
}

func TestClassroomDeliversToGroupMembersOnly(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioClassroom)
	p.Groups, p.Size, p.Repeat = 3, 4, 5
	rep := run(t, p)
	if rep.Conns != 12 || rep.Expected != 60 || rep.Delivered != 60 || rep.Unexpected != 0 || rep.Lost != 0 {
		t.Fatalf("conns %d expected %d delivered %d unexpected %d lost %d", rep.Conns, rep.Expected, rep.Delivered, rep.Unexpected, rep.Lost)
	}
}

func TestIdleReadsServerMemory(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioIdle)
	p.Conns, p.Hold, p.PID = 50, 10*time.Millisecond, os.Getpid() // the fake server lives in this process
	rep := run(t, p)
	if rep.Connected != 50 || rep.Server == nil || rep.Server.After.PssKiB == 0 || rep.Server.Conns != 50 {
		t.Fatalf("connected %d server %+v", rep.Connected, rep.Server)
	}
	if rep.Handshake.Count != 50 || rep.ConnectRate <= 0 {
		t.Fatalf("handshake %+v rate %.0f", rep.Handshake, rep.ConnectRate)
	}
}

func TestEchoRoundTrips(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioEcho)
	p.Conns, p.Duration = 4, 300*time.Millisecond
	rep := run(t, p)
	if rep.Echo == nil || rep.Echo.Trips == 0 || rep.Echo.Lost != 0 || rep.Echo.RTT.Count != rep.Echo.Trips {
		t.Fatalf("echo %+v", rep.Echo)
	}
}

func TestChurnCyclesAndCountsServerFDs(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioChurn)
	p.Conns, p.Rate, p.Duration, p.ChurnHold, p.PID = 20, 100, 500*time.Millisecond, 10*time.Millisecond, os.Getpid()
	rep := run(t, p)
	// The ticker paces the cycles: never more than the rate allows over the duration, and on
	// a busy machine fewer (its ticks are dropped while this process waits for a CPU; 16 of
	// 50 were seen), so the lower bound asks only that it keeps cycling.
	most := int(p.Rate*p.Duration.Seconds()) + 1
	if rep.Churn == nil || rep.Churn.Cycles < 2 || rep.Churn.Cycles > most || rep.Churn.Errors != 0 || rep.Churn.FDsBefore == 0 {
		t.Fatalf("churn %+v problems %v (want 2 to %d cycles)", rep.Churn, rep.Problems, most)
	}
}

func TestBadTokenIsADialError(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioIdle)
	p.Conns, p.Hold = 3, 0
	p.Tokens.Secret = "not-the-secret"
	rep := run(t, p)
	if rep.Connected != 0 || rep.DialErrors["http-401"] != 3 || len(rep.Problems) == 0 {
		t.Fatalf("connected %d dial errors %v problems %v", rep.Connected, rep.DialErrors, rep.Problems)
	}
}

// TestMain lets the test binary act as a worker process, as wsbench re-executes itself with
// --procs, or as the service (serverRoleEnv).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == WorkerArg {
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv(serverRoleEnv) == "1" {
		os.Exit(serveForTest())
	}
	os.Exit(m.Run())
}

func TestWorkerProcessesSumTheirParts(t *testing.T) {
	f := newFakeServer(t)
	p := fakeParams(f, ScenarioFanout)
	p.Conns, p.Messages, p.Procs = 30, 90, 3
	p.Src = []string{"127.0.0.2", "127.0.0.3"} // loopback aliases: Linux routes all of 127/8 to lo
	rep := run(t, p)
	if rep.Procs != 3 || rep.Connected != 30 || rep.Expected != 90 || rep.Delivered != 90 || rep.Lost != 0 {
		t.Fatalf("procs %d connected %d expected %d delivered %d lost %d problems %v",
			rep.Procs, rep.Connected, rep.Expected, rep.Delivered, rep.Lost, rep.Problems)
	}
	if rep.Handshake.Count != 30 || rep.Latency.Count != 90 {
		t.Fatalf("merged histograms: handshake %d latency %d", rep.Handshake.Count, rep.Latency.Count)
	}
}
