package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// WriteFleetTable prints the fleet bench as one Markdown table, a row per scenario,
// backplane, node count and engine, with the first engine's server CPU per delivery as the
// baseline of the ratio column.
func WriteFleetTable(w io.Writer, res *FleetResult, baseline string) {
	fmt.Fprintf(w, "fleet bench %s, %d connections per node, %.0f s in all\n", res.Date, res.ConnsPerNode, res.Seconds)
	if res.Note != "" {
		fmt.Fprintf(w, "(%s)\n", res.Note)
	}
	fmt.Fprintln(w, "\n| scenario | backplane | nodes | conns | engine | deliveries/s | server µs/delivery | vs "+baseline+
		" | redis µs/publish | redis µs/delivery | lost | dup | p99 ms |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	rows := sortedFleetRows(res.Rows)
	base := map[string]float64{}
	for _, r := range rows {
		if r.Engine == baseline && r.Report.Server != nil {
			base[fleetKey(r)] = r.Report.Server.CPUPerDeliveryUs
		}
	}
	for _, r := range rows {
		rep := r.Report
		srvUs, redisPub, redisDel, ratioText := "-", "-", "-", "-"
		if s := rep.Server; s != nil {
			srvUs = fmt.Sprintf("%.2f", s.CPUPerDeliveryUs)
			if b := base[fleetKey(r)]; b > 0 {
				ratioText = fmt.Sprintf("%.2f×", s.CPUPerDeliveryUs/b)
			}
			if rep.Publish != nil && rep.Publish.Published > 0 {
				redisPub = fmt.Sprintf("%.2f", s.RedisCPU*1e6/float64(rep.Publish.Published))
			}
			if rep.Delivered > 0 {
				redisDel = fmt.Sprintf("%.3f", s.RedisCPU*1e6/float64(rep.Delivered))
			}
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %s | %.0f | %s | %s | %s | %s | %d | %d | %.2f |\n",
			r.Scenario, r.Backend, r.Nodes, rep.Connected, r.Engine, rep.DeliveredPerSec, srvUs, ratioText,
			redisPub, redisDel, rep.Lost, rep.Duplicated, rep.Latency.P99)
	}
	for _, r := range res.Rows {
		for _, p := range r.Report.Problems {
			fmt.Fprintf(w, "PROBLEM %s, %s ×%d, %s: %s\n", r.Scenario, r.Engine, r.Nodes, r.Backend, p)
		}
	}
}

// sortedFleetRows orders rows by scenario, backplane, node count and engine, each in the
// order it first ran, so a scenario's cost against N reads down one block of the table.
func sortedFleetRows(rows []FleetRow) []FleetRow {
	first := map[string]int{}
	rank := func(s string) int {
		if _, ok := first[s]; !ok {
			first[s] = len(first)
		}
		return first[s]
	}
	for _, r := range rows {
		rank("s:" + r.Scenario)
		rank("b:" + r.Backend)
		rank("e:" + r.Engine)
	}
	out := slices.Clone(rows)
	slices.SortStableFunc(out, func(a, b FleetRow) int {
		return cmp.Or(cmp.Compare(rank("s:"+a.Scenario), rank("s:"+b.Scenario)),
			cmp.Compare(rank("b:"+a.Backend), rank("b:"+b.Backend)),
			cmp.Compare(a.Nodes, b.Nodes),
			cmp.Compare(rank("e:"+a.Engine), rank("e:"+b.Engine)))
	})
	return out
}

func fleetKey(r FleetRow) string {
	return r.Scenario + "/" + r.Backend + "/" + strconv.Itoa(r.Nodes)
}

// runFleetCommand is `wsbench fleet`.
func runFleetCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := FleetOptions{}
	var nodes, backends, engines, scenarios string
	fs.StringVar(&nodes, "nodes", "1,2,4", "service processes per configuration")
	fs.StringVar(&backends, "backends", BackendRedis+","+BackendCluster, "backplanes: redis (one server), cluster (3 masters, sharded Pub/Sub)")
	fs.StringVar(&engines, "engines", "gws,epoll", "engines; the first is the baseline of the ratio column")
	fs.StringVar(&scenarios, "scenarios", FleetClassroom+","+FleetBurst+","+FleetBroadcast, "scenarios")
	fs.IntVar(&o.ConnsPerNode, "conns-per-node", 2000, "connections per service process (a sizing run: 19000)")
	fs.IntVar(&o.Repeat, "repeat", 50, "messages each connection receives per scenario (enough for the 10 ms CPU clock to resolve µs per delivery)")
	harnessFlags(fs, &o.Procs, &o.ServerBin, &o.RedisServer, &o.JSONOut)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.Nodes, err = parseInts(nodes); err != nil {
		fmt.Fprintf(stderr, "wsbench fleet: --nodes: %v\n", err)
		return 2
	}
	o.Backends, o.Engines, o.Scenarios = strings.Split(backends, ","), strings.Split(engines, ","), strings.Split(scenarios, ",")
	if o.ConnsPerNode < 2 || o.Repeat < 1 {
		fmt.Fprintln(stderr, "wsbench fleet: --conns-per-node must be at least 2 and --repeat at least 1")
		return 2
	}
	res, err := RunFleet(ctx, o, stderr)
	if res != nil && len(res.Rows) > 0 {
		WriteFleetTable(stdout, res, o.Engines[0])
		writeJSON(o.JSONOut, res, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbench fleet: %v\n", err)
		return 2
	}
	for _, r := range res.Rows {
		if len(r.Report.Problems) > 0 {
			return 1
		}
	}
	return 0
}

func parseInts(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// writeJSON writes v, indented, to path (nothing when path is empty); failures are reported
// on stderr, since the table on stdout has the results already.
func writeJSON(path string, v any, stderr io.Writer) {
	if path == "" {
		return
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbench: write %s: %v\n", path, err)
	}
}
