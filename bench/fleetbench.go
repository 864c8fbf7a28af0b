package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
)

// Fleet scenarios: the classroom fan-out with every group's members spread over the nodes,
// a burst to users who each have two connections on different nodes, and broadcasts.
const (
	FleetClassroom = "classroom"
	FleetBurst     = "burst"
	FleetBroadcast = "broadcast"
)

// fleetSources are the loopback source addresses of fleet and storm clients: eight, so the
// largest runs (76,000 connections) use under half of each address's ephemeral ports, where
// connects stay cheap (see Capacity.PortHint).
var fleetSources = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9"}

// fullConnsPerNode is what one node would hold in a sizing run (under the 20,000-descriptor
// limit of a process here); the default fleet bench scales down from it to fit its time.
const fullConnsPerNode = 19000

// FleetOptions configure `wsbench fleet`.
type FleetOptions struct {
	Nodes        []int    // service processes per configuration, e.g. 1, 2, 4
	Backends     []string // BackendRedis, BackendCluster
	Engines      []string // the first is the baseline of the ratios
	Scenarios    []string // Fleet* names
	ConnsPerNode int
	Repeat       int // messages per connection in each scenario
	Procs        int // client processes per run; 0: enough for the descriptor limit, at least 2
	ServerBin    string
	RedisServer  string
	JSONOut      string
}

// FleetRow is one scenario run on one configuration.
type FleetRow struct {
	Backend  string  `json:"backend"`
	Nodes    int     `json:"nodes"`
	Engine   string  `json:"engine"`
	Scenario string  `json:"scenario"`
	Report   *Report `json:"report"`
}

// FleetResult is every run of a fleet bench.
type FleetResult struct {
	Date         string     `json:"date"`
	ConnsPerNode int        `json:"conns_per_node"`
	Note         string     `json:"note,omitempty"` // how the run was scaled down, when it was
	Seconds      float64    `json:"seconds"`        // the whole bench, server build included
	Rows         []FleetRow `json:"rows"`
}

// scaleNote says how far a run is scaled down from the sizing figure, or nothing.
func scaleNote(perNode int) string {
	if perNode >= fullConnsPerNode {
		return ""
	}
	return fmt.Sprintf("scaled down: %d connections per node instead of ~%d, so every configuration fits the "+
		"10-minute budget on this machine (2 cores shared by servers, Redis and clients); raise --conns-per-node "+
		"on a larger machine", perNode, fullConnsPerNode)
}

// fleetParams is scenario sc on nodes nodes of o.ConnsPerNode connections each.
func fleetParams(o *FleetOptions, sc string, nodes int) (Params, error) {
	total := nodes * o.ConnsPerNode
	p := Params{Concurrency: 64, Wait: 30 * time.Second, Quiet: 3 * time.Second,
		Src: fleetSources, Repeat: o.Repeat}
	switch sc {
	case FleetClassroom:
		p.Scenario, p.Size = ScenarioClassroom, min(50, total)
		p.Groups = total / p.Size
	case FleetBurst:
		// Two connections per user; Params.Node puts them on different nodes.
		p.Scenario, p.Conns, p.Users = ScenarioFanout, total, max(1, total/2)
		p.Messages = o.Repeat * p.Users
	case FleetBroadcast:
		p.Scenario, p.Conns = ScenarioBroadcast, total
	default:
		return Params{}, fmt.Errorf("unknown fleet scenario %q (want %s, %s or %s)", sc, FleetClassroom, FleetBurst, FleetBroadcast)
	}
	perProc := MachineCapacity().PerProc()
	p.Procs = max(o.Procs, 2, (total+perProc-1)/perProc)
	return p, nil
}

// RunFleet starts each backend, then for every node count and engine a fresh set of
// service processes on it, and runs every scenario against them. progress gets each report.
func RunFleet(ctx context.Context, o FleetOptions, progress io.Writer) (res *FleetResult, err error) {
	began := time.Now()
	defer func() {
		if res != nil {
			res.Seconds = time.Since(began).Seconds()
		}
	}()
	for _, sc := range o.Scenarios {
		if _, err := fleetParams(&o, sc, 1); err != nil {
			return nil, err
		}
	}
	work, bin, cleanup, err := workspace(ctx, "fleet", o.ServerBin)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res = &FleetResult{Date: time.Now().UTC().Format(time.RFC3339), ConnsPerNode: o.ConnsPerNode, Note: scaleNote(o.ConnsPerNode)}
	if res.Note != "" {
		fmt.Fprintf(progress, "-- %s\n", res.Note)
	}
	secret, apiKey := randomHex(32), randomHex(16)
	turn := 0
	for _, kind := range o.Backends {
		b, err := startBackend(ctx, kind, o.RedisServer, work)
		if err != nil {
			return res, err
		}
		for _, n := range o.Nodes {
			order := slices.Clone(o.Engines)
			if turn%2 == 1 {
				slices.Reverse(order) // neither engine always runs on the warmer machine
			}
			turn++
			for _, eng := range order {
				rows, err := runFleetConfig(ctx, &o, b, n, eng, bin, secret, apiKey, work, progress)
				res.Rows = append(res.Rows, rows...)
				if err != nil {
					b.stop()
					return res, fmt.Errorf("%s, %d node(s), %s: %w", kind, n, eng, err)
				}
			}
		}
		b.stop()
	}
	return res, nil
}

// runFleetConfig starts n nodes of engine eng on b and runs every scenario against them.
func runFleetConfig(ctx context.Context, o *FleetOptions, b *backend, n int, eng, bin, secret, apiKey, work string,
	progress io.Writer) ([]FleetRow, error) {
	set, err := startNodes(ctx, n, bin, eng, b, secret, apiKey, work)
	if err != nil {
		return nil, err
	}
	defer set.stop()
	var rows []FleetRow
	for _, sc := range o.Scenarios {
		fmt.Fprintf(progress, "-- fleet: %s on %d %s node(s), backplane %s\n", sc, n, eng, b.kind)
		p, err := fleetParams(o, sc, n)
		if err != nil {
			return rows, err
		}
		p.Label = fmt.Sprintf("%s ×%d on %s", eng, n, b.kind)
		p.URLs = set.urls()
		p.URL = p.URLs[0]
		p.PublishVia, p.RedisURL, p.RedisCluster = "redis", b.url(), b.cluster()
		p.Tokens = TokenOptions{Secret: secret, TTL: time.Hour}
		p.PIDs, p.RedisPIDs = set.pids(), b.pids()
		p.Run = "f" + sc[:2] + eng[:1] + strconv.Itoa(n) + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
		rep, err := Run(ctx, p)
		if err != nil {
			return rows, fmt.Errorf("%s: %w\n%s", sc, err, set.logTails(true))
		}
		rep.Write(progress)
		fmt.Fprintln(progress)
		rows = append(rows, FleetRow{Backend: b.kind, Nodes: n, Engine: eng, Scenario: sc, Report: rep})
		if tails := set.logTails(false); tails != "" {
			return rows, fmt.Errorf("a node exited during %s:\n%s", sc, tails)
		}
	}
	return rows, nil
}
