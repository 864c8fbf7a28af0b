package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// StormOptions configure `wsbench storm`: Nodes service processes hold ConnsPerNode
// connections each, in groups spread over the nodes that a paced publisher feeds; KillAfter
// into the publishing, one node is killed (SIGKILL) and its clients reconnect to the others
// with Reconnect's backoff.
type StormOptions struct {
	Nodes        int
	ConnsPerNode int
	Engines      []string // run in this order, each on a fresh set of nodes
	Backend      string   // BackendRedis or BackendCluster
	Protocol     string   // the clients': ProtocolV1 (default) or ProtocolV2
	GroupSize    int      // members per group; every group has members on every node
	GroupRate    float64  // messages per second to each group
	Duration     time.Duration
	KillAfter    time.Duration
	Reconnect    ReconnectPolicy
	Procs        int
	ServerBin    string
	RedisServer  string
	JSONOut      string
}

// fullStormConnsPerNode is the storm: ~12,000 per node, ~16,000 per survivor.
const fullStormConnsPerNode = 12000

// StormResult is every storm of a run, one per engine.
type StormResult struct {
	Date         string `json:"date"`
	Nodes        int    `json:"nodes"`
	ConnsPerNode int    `json:"conns_per_node"`
	Protocol     string `json:"protocol"`
	// MemoryLimitMiB is the container memory limit of k8s/deployment.yaml, for the
	// survivors' peaks.
	MemoryLimitMiB int64 `json:"memory_limit_mib"`
	// MemoryLimitEngine is the engine k8s/ deploys, the one the limit is sized for and held to.
	MemoryLimitEngine string     `json:"memory_limit_engine"`
	Note              string     `json:"note,omitempty"`
	Runs              []StormRun `json:"runs"`
}

// StormRun is one storm.
type StormRun struct {
	Engine  string `json:"engine"`
	Backend string `json:"backend"`
	Killed  int    `json:"killed_node"`
	// KilledConns is how many connections the killed node held (its gauge just before).
	KilledConns int `json:"killed_conns"`
	// AllBackSeconds is from the kill until the survivors held every connection again (their
	// websocket_connections_active, polled every 50 ms); 0 when that never happened.
	AllBackSeconds float64 `json:"all_back_seconds"`
	// LastReconnectSeconds is from the kill until the last client reconnect succeeded.
	LastReconnectSeconds float64    `json:"last_reconnect_seconds"`
	Survivors            []Survivor `json:"survivors"`
	// PublishedDuring is what the paced publisher sent between the kill and AllBack, in all
	// and to each group (every reconnecting client is in one group).
	PublishedDuring int64   `json:"published_during"`
	PerGroupDuring  float64 `json:"per_group_during"`
	Report          *Report `json:"report"`
	// Resume is what the v2 clients' resumes took (protocol v2 only).
	Resume   *StormResume `json:"resume,omitempty"`
	Problems []string     `json:"problems"`
}

// Survivor is one surviving node's share of the storm.
type Survivor struct {
	Node          int     `json:"node"`
	ConnsBefore   int64   `json:"conns_before"`
	ConnsAfter    int64   `json:"conns_after"`
	Handshakes    int64   `json:"handshakes"` // accepted upgrades between the kill and AllBack
	HandshakesSec float64 `json:"handshakes_per_sec"`
	// CPUPerHandshakeUs is the node's CPU time over the same span per handshake; it includes
	// the node's share of the steady delivery meanwhile, so it is an upper bound.
	CPUPerHandshakeUs float64 `json:"cpu_per_handshake_us"`
	// PeakKiB is the node's peak resident memory (VmHWM) once the storm is over.
	PeakKiB int64 `json:"peak_kib"`
}

// stormParams is the storm's plan: groups spread over every node, fed at GroupRate each.
func stormParams(o *StormOptions) Params {
	total := o.Nodes * o.ConnsPerNode
	size := min(o.GroupSize, total)
	p := Params{Scenario: ScenarioClassroom, Size: size, Groups: total / size,
		Concurrency: 64, Wait: 30 * time.Second, Quiet: 3 * time.Second,
		Src: fleetSources}
	p.Repeat = max(1, int(o.GroupRate*o.Duration.Seconds()))
	p.PublishRate = float64(p.Groups*p.Repeat) / o.Duration.Seconds()
	pol := o.Reconnect
	p.Reconnect = &pol
	p.Protocol = o.Protocol
	perProc := MachineCapacity().PerProc()
	p.Procs = max(o.Procs, 2, (total+perProc-1)/perProc)
	return p
}

// RunStorm runs one storm per engine, each on a fresh set of nodes on one backend.
func RunStorm(ctx context.Context, o StormOptions, progress io.Writer) (*StormResult, error) {
	if o.Nodes < 2 {
		return nil, fmt.Errorf("a reconnect storm needs at least 2 nodes, not %d", o.Nodes)
	}
	if o.KillAfter >= o.Duration {
		return nil, fmt.Errorf("--kill-after %s must fall inside --duration %s", o.KillAfter, o.Duration)
	}
	work, bin, cleanup, err := workspace(ctx, "storm", o.ServerBin)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	switch o.Protocol {
	case "":
		o.Protocol = ProtocolV1
	case ProtocolV1, ProtocolV2:
	default:
		return nil, fmt.Errorf("--protocol must be v1 or v2, not %q", o.Protocol)
	}
	limit, err := deploymentMemoryLimitMiB()
	if err != nil {
		return nil, err
	}
	deployed, err := deploymentEngine()
	if err != nil {
		return nil, err
	}
	res := &StormResult{Date: time.Now().UTC().Format(time.RFC3339), Nodes: o.Nodes, ConnsPerNode: o.ConnsPerNode,
		Protocol: o.Protocol, MemoryLimitMiB: limit, MemoryLimitEngine: deployed}
	if o.ConnsPerNode < fullStormConnsPerNode {
		res.Note = fmt.Sprintf("scaled down: %d connections per node instead of ~%d, so the storm fits this machine "+
			"(2 cores shared by %d servers, Redis and the clients); raise --conns-per-node on a larger machine",
			o.ConnsPerNode, fullStormConnsPerNode, o.Nodes)
		fmt.Fprintf(progress, "-- %s\n", res.Note)
	}
	b, err := startBackend(ctx, o.Backend, o.RedisServer, work)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	secret, apiKey := randomHex(32), randomHex(16)
	for _, eng := range o.Engines {
		fmt.Fprintf(progress, "-- storm: %d %s nodes × %d connections, backplane %s\n", o.Nodes, eng, o.ConnsPerNode, b.kind)
		sr, err := stormOnce(ctx, &o, b, eng, bin, secret, apiKey, work)
		if sr != nil {
			if eng == deployed {
				sr.Problems = append(sr.Problems, sr.overLimit(limit)...)
			}
			res.Runs = append(res.Runs, *sr)
			sr.Report.Write(progress)
			fmt.Fprintln(progress)
		}
		if err != nil {
			return res, fmt.Errorf("storm on %s: %w", eng, err)
		}
	}
	return res, nil
}

// stormOnce starts the nodes, connects, publishes and kills the last node on the way.
func stormOnce(ctx context.Context, o *StormOptions, b *backend, eng, bin, secret, apiKey, work string) (*StormRun, error) {
	set, err := startNodes(ctx, o.Nodes, bin, eng, b, secret, apiKey, work)
	if err != nil {
		return nil, err
	}
	defer set.stop()
	p := stormParams(o)
	total := o.Nodes * o.ConnsPerNode
	for _, pid := range set.pids() {
		// The survivors end up with every connection between them.
		if err := CheckServer(pid, (total+o.Nodes-2)/(o.Nodes-1)); err != nil {
			return nil, err
		}
	}
	p.Label = fmt.Sprintf("%s ×%d on %s, storm", eng, o.Nodes, b.kind)
	p.URLs = set.urls()
	p.URL = p.URLs[0]
	p.PublishVia, p.RedisURL, p.RedisCluster = "redis", b.url(), b.cluster()
	v2 := o.Protocol == ProtocolV2
	if v2 {
		// Only sequenced messages have positions a resume can replay.
		p.PublishVia = "fcall"
	}
	p.Tokens = TokenOptions{Secret: secret, TTL: time.Hour}
	p.RedisPIDs = b.pids()
	p.Run = "st" + eng[:1] + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	sr := &StormRun{Engine: eng, Backend: b.kind, Killed: o.Nodes - 1}
	var killedAt time.Time
	rep, err := runWith(ctx, p, func(ctx context.Context, start time.Time) error {
		var first, atKill callSample
		var err error
		if v2 {
			if first, err = sampleCalls(ctx, b.addrs()); err != nil {
				return err
			}
		}
		sleep(ctx, time.Until(start.Add(o.KillAfter)))
		if v2 {
			if atKill, err = sampleCalls(ctx, b.addrs()); err != nil {
				return err
			}
		}
		limit := time.Until(start.Add(o.Duration)) + time.Minute
		var before []nodeCounts
		killedAt, before, err = sr.killAndWatch(ctx, set, p.PublishRate, limit)
		if err != nil {
			return err
		}
		if v2 {
			sr.Resume = &StormResume{}
			var done callSample
			sr.Resume.Recoveries, done, err = awaitRecoveries(ctx, set[:sr.Killed], before, b.addrs(), limit)
			if err != nil {
				return err
			}
			sr.Resume.RedisCommandsByName = stormCommands(first, atKill, done)
			for _, n := range sr.Resume.RedisCommandsByName {
				sr.Resume.RedisCommands += n
			}
			sr.Resume.RedisCommandsPerClient = ratio(float64(sr.Resume.RedisCommands), float64(sr.KilledConns))
		}
		for k := range sr.Survivors {
			if sr.Survivors[k].PeakKiB, err = peakKiB(set[k].cmd.Process.Pid); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, set.logTails(true))
	}
	sr.Report = rep
	sr.PerGroupDuring = ratio(float64(sr.PublishedDuring), float64(p.Groups))
	if rc := rep.Reconnect; rc != nil && rc.LastReconnectNs > 0 && !killedAt.IsZero() {
		sr.LastReconnectSeconds = float64(rc.LastReconnectNs-killedAt.UnixNano()) / 1e9
	}
	if r := sr.Resume; r != nil && rep.V2 != nil {
		r.SyncAllSeconds, r.Synced, r.Unrecovered = rep.V2.since(killedAt), rep.V2.ResumedSynced, rep.V2.Unrecovered
	}
	sr.Problems = sr.problems()
	return sr, nil
}

// killAndWatch kills the last node, then follows the survivors until they hold every
// connection again (or limit passes), and reads how many handshakes each took meanwhile.
func (sr *StormRun) killAndWatch(ctx context.Context, set nodeSet, publishRate float64, limit time.Duration) (time.Time, []nodeCounts, error) {
	before := make([]nodeCounts, len(set))
	var total int64
	for k, s := range set {
		c, err := s.counts(ctx)
		if err != nil {
			return time.Time{}, nil, err
		}
		before[k] = c
		total += c.active
	}
	victim := set[sr.Killed]
	sr.KilledConns = int(before[sr.Killed].active)
	killedAt := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		return time.Time{}, nil, fmt.Errorf("kill node %d: %w", sr.Killed, err)
	}
	survivors := set[:sr.Killed]
	deadline := killedAt.Add(limit)
	var after []nodeCounts
	for time.Now().Before(deadline) && ctx.Err() == nil {
		after = after[:0]
		var held int64
		for _, s := range survivors {
			c, err := s.counts(ctx)
			if err != nil {
				return killedAt, nil, err
			}
			after = append(after, c)
			held += c.active
		}
		if held >= total {
			sr.AllBackSeconds = time.Since(killedAt).Seconds()
			break
		}
		sleep(ctx, 50*time.Millisecond)
	}
	window := sr.AllBackSeconds
	if window == 0 {
		window = time.Since(killedAt).Seconds()
	}
	sr.PublishedDuring = int64(publishRate * window)
	for k := range survivors {
		if k >= len(after) {
			break
		}
		n := after[k].accepted - before[k].accepted
		sr.Survivors = append(sr.Survivors, Survivor{Node: k, ConnsBefore: before[k].active, ConnsAfter: after[k].active,
			Handshakes: n, HandshakesSec: ratio(float64(n), window),
			CPUPerHandshakeUs: ratio((after[k].cpu-before[k].cpu)*1e6, float64(n))})
	}
	return killedAt, before, nil
}

// problems lists what makes the storm a failure: connections never all back, duplicates, or
// loss on connections that never dropped (what the reconnected ones missed is the
// measurement, in v1).
func (sr *StormRun) problems() []string {
	out := append([]string(nil), sr.Report.Problems...)
	if sr.AllBackSeconds == 0 {
		out = append(out, "the survivors never held every connection again")
	}
	reconnected := 0
	if rc := sr.Report.Reconnect; rc != nil {
		reconnected = rc.Reconnected
	}
	if reconnected < sr.KilledConns {
		out = append(out, fmt.Sprintf("only %d of the killed node's %d connections reconnected", reconnected, sr.KilledConns))
	}
	if r := sr.Resume; r != nil {
		// The storm stays inside the history window: every resume must be continuous.
		if r.Synced < reconnected {
			out = append(out, fmt.Sprintf("only %d of %d reconnected v2 clients got a sync", r.Synced, reconnected))
		}
		if n := (&V2Report{Unrecovered: r.Unrecovered}).unrecoveredTotal(); n > 0 {
			out = append(out, fmt.Sprintf("%d syncs said recovered:false %v", n, r.Unrecovered))
		}
		if sr.Report.Lost > 0 {
			out = append(out, fmt.Sprintf("v2 clients lost %d messages", sr.Report.Lost))
		}
	}
	return out
}

// overLimit lists the survivors whose peak memory passed the deployment's limit (MiB).
func (sr *StormRun) overLimit(limitMiB int64) []string {
	var out []string
	for _, s := range sr.Survivors {
		if s.PeakKiB > limitMiB*1024 {
			out = append(out, fmt.Sprintf("survivor %d peaked at %.0f MiB, over the %d MiB limit of k8s/deployment.yaml",
				s.Node, float64(s.PeakKiB)/1024, limitMiB))
		}
	}
	return out
}

// nodeCounts is what the storm reads from a node's /metrics.
type nodeCounts struct {
	active, accepted int64
	recoveries       int64   // stream resumes, every result (websocket_recovery_total)
	cpu              float64 // the process's CPU seconds, from /proc
}

// counts reads a node's connection counts from /metrics and its CPU time from /proc.
func (s *server) counts(ctx context.Context) (nodeCounts, error) {
	c, err := scrapeCounts(ctx, s.addr)
	if err != nil {
		return c, err
	}
	c.cpu, err = ReadCPU(s.cmd.Process.Pid)
	return c, err
}

// scrapeCounts reads websocket_connections_active and the accepted upgrades from addr.
func scrapeCounts(ctx context.Context, addr string) (nodeCounts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nodeCounts{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nodeCounts{}, fmt.Errorf("metrics of %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var c nodeCounts
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *int64
		switch {
		case strings.HasPrefix(name, "websocket_recovery_total{"):
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return nodeCounts{}, fmt.Errorf("metrics of %s: %s: %w", addr, name, err)
			}
			c.recoveries += int64(v)
			continue
		}
		switch name {
		case "websocket_connections_active":
			dst = &c.active
		case `websocket_connections_total{result="accepted"}`:
			dst = &c.accepted
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nodeCounts{}, fmt.Errorf("metrics of %s: %s: %w", addr, name, err)
		}
		*dst = int64(v)
		found++
	}
	if err := sc.Err(); err != nil {
		return nodeCounts{}, fmt.Errorf("metrics of %s: %w", addr, err)
	}
	if found < 2 {
		return nodeCounts{}, fmt.Errorf("metrics of %s: no websocket_connections_active or accepted count", addr)
	}
	return c, nil
}
