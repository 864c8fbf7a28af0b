package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/app"
	"github.com/huleedu/websocket-service/config"
)

// serverRoleEnv makes the test binary run the real service (app.App, configured from the
// environment like cmd/websocket-service), so end-to-end harness tests start service
// processes without building the command first.
const serverRoleEnv = "WSBENCH_TEST_SERVER"

// serveForTest is the service's serve loop, trimmed: start, listen, serve until SIGTERM,
// shut down (drain) and exit 0.
func serveForTest() int {
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := app.New(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := node.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := node.Listen()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- node.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-served:
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	case <-sig:
	}
	if err := node.Shutdown(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "shutdown:", err)
		return 1
	}
	<-served
	return 0
}

// testServerBin makes this test binary the service for the harness to start.
func testServerBin(t *testing.T) string {
	t.Helper()
	if _, err := lookRedis(); err != nil {
		t.Skip(err)
	}
	t.Setenv(serverRoleEnv, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestFleetBenchSmallestConfigurationIsClean runs the fleet bench end to end at its smallest:
// two service processes per engine, on one Redis and on a 3-master cluster, every scenario,
// clients in two processes. Every run must deliver everything exactly once, and the table
// must carry a row per run with the server's and Redis's CPU read.
func TestFleetBenchSmallestConfigurationIsClean(t *testing.T) {
	o := FleetOptions{Nodes: []int{2}, Backends: []string{BackendRedis, BackendCluster}, Engines: []string{"gws", "epoll"},
		Scenarios: []string{FleetClassroom, FleetBurst, FleetBroadcast}, ConnsPerNode: 20, Repeat: 3,
		ServerBin: testServerBin(t)}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	res, err := RunFleet(ctx, o, &progress)
	if err != nil {
		t.Fatalf("fleet bench: %v\n%s", err, progress.String())
	}
	if want := 2 * 2 * 3; len(res.Rows) != want {
		t.Fatalf("%d rows, want %d", len(res.Rows), want)
	}
	for _, r := range res.Rows {
		rep := r.Report
		if len(rep.Problems) > 0 || rep.Connected != 40 || rep.Delivered != rep.Expected || rep.Expected != 40*3 {
			t.Errorf("%s ×%d %s on %s: connected %d, delivered %d of %d, problems %v",
				r.Scenario, r.Nodes, r.Engine, r.Backend, rep.Connected, rep.Delivered, rep.Expected, rep.Problems)
		}
		if s := rep.Server; s == nil || len(s.PIDs) != 2 || s.DeliverCPU < 0 {
			t.Errorf("%s ×%d %s on %s: server figures %+v, want the sum over 2 pids", r.Scenario, r.Nodes, r.Engine, r.Backend, s)
		}
	}
	if !strings.Contains(res.Note, "scaled down") {
		t.Errorf("a run below %d connections per node does not say it is scaled down: %q", fullConnsPerNode, res.Note)
	}
	var table strings.Builder
	WriteFleetTable(&table, res, "gws")
	if n := strings.Count(table.String(), "\n| "); n != len(res.Rows)+1 {
		t.Errorf("table has %d rows, want a header and %d:\n%s", n, len(res.Rows), table.String())
	}
	if testing.Verbose() {
		_, _ = io.WriteString(os.Stderr, table.String())
	}
}

// TestFleetNodeAssignmentSpreadsGroupsAndUsers: the fleet bench only tests the backplane
// when a group's members, and a user's two connections, sit on different nodes.
func TestFleetNodeAssignmentSpreadsGroupsAndUsers(t *testing.T) {
	for _, c := range []struct{ nodes, perNode int }{{2, 100}, {4, 100}, {2, 101}, {4, 3}} {
		nodes := c.nodes
		o := FleetOptions{ConnsPerNode: c.perNode, Repeat: 1}
		urls := make([]string, nodes)
		for k := range urls {
			urls[k] = fmt.Sprintf("ws://127.0.0.1:%d/ws", 9000+k)
		}
		cls, err := fleetParams(&o, FleetClassroom, nodes)
		if err != nil {
			t.Fatal(err)
		}
		cls.URLs, cls.PublishVia, cls.RedisURL = urls, "redis", "redis://127.0.0.1:1"
		if err := cls.Normalize(); err != nil {
			t.Fatal(err)
		}
		for g := range cls.Groups {
			seen := map[int]bool{}
			for i := g * cls.Size; i < (g+1)*cls.Size; i++ {
				seen[cls.Node(i)] = true
			}
			if len(seen) != nodes {
				t.Fatalf("%d nodes: group %d's members are on %d of them", nodes, g, len(seen))
			}
		}
		burst, err := fleetParams(&o, FleetBurst, nodes)
		if err != nil {
			t.Fatal(err)
		}
		burst.URLs, burst.PublishVia, burst.RedisURL = urls, "redis", "redis://127.0.0.1:1"
		if err := burst.Normalize(); err != nil {
			t.Fatal(err)
		}
		byUser := map[string]map[int]bool{}
		perNode := make([]int, nodes)
		for i := range burst.Conns {
			u := burst.Identity(i).User
			if byUser[u] == nil {
				byUser[u] = map[int]bool{}
			}
			byUser[u][burst.Node(i)] = true
			perNode[burst.Node(i)]++
		}
		for u, on := range byUser {
			if len(on) != 2 {
				t.Fatalf("%d nodes: user %s's two connections are on %d node(s)", nodes, u, len(on))
			}
		}
		for k, n := range perNode {
			if n < o.ConnsPerNode-1 || n > o.ConnsPerNode+1 {
				t.Fatalf("%d nodes: node %d holds %d connections, want %d±1", nodes, k, n, o.ConnsPerNode)
			}
		}
	}
}
