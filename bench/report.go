package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of one scenario run, summed over its processes.
type Report struct {
	Scenario string `json:"scenario"`
	Label    string `json:"label,omitempty"`
	Run      string `json:"run"`
	Date     string `json:"date"`
	Procs    int    `json:"procs"`

	Conns    int `json:"conns"`
	Users    int `json:"users,omitempty"`
	Groups   int `json:"groups,omitempty"`
	Size     int `json:"size,omitempty"`
	Messages int `json:"messages,omitempty"`
	Repeat   int `json:"repeat,omitempty"`

	Connected      int            `json:"connected"`
	DialErrors     map[string]int `json:"dial_errors,omitempty"`
	ConnectSeconds float64        `json:"connect_seconds"`
	ConnectRate    float64        `json:"connect_per_sec"`
	Handshake      Summary        `json:"handshake"`

	Server *ServerStats `json:"server,omitempty"`

	PublishVia      string        `json:"publish_via,omitempty"`
	PublishRate     float64       `json:"publish_rate,omitempty"` // messages/s when paced
	Publish         *PublishStats `json:"publish,omitempty"`
	Expected        int64         `json:"expected,omitempty"`
	Delivered       int64         `json:"delivered,omitempty"`
	Lost            int64         `json:"lost"`
	Duplicated      int64         `json:"duplicated"`
	Unexpected      int64         `json:"unexpected"`
	Reordered       int64         `json:"reordered"`
	DeliverSeconds  float64       `json:"deliver_seconds,omitempty"`
	DeliveredPerSec float64       `json:"delivered_per_sec,omitempty"`
	Latency         Summary       `json:"latency"`

	ClosedByServer int            `json:"closed_by_server"`
	CloseCodes     map[string]int `json:"close_codes,omitempty"`
	ErrorFrames    map[string]int `json:"error_frames,omitempty"`
	Dropped        int            `json:"dropped_consumers"`

	Churn     *ChurnReport     `json:"churn,omitempty"`
	Reconnect *ReconnectReport `json:"reconnect,omitempty"`
	Protocol  string           `json:"protocol,omitempty"`
	V2        *V2Report        `json:"v2,omitempty"`
	Echo      *EchoReport      `json:"echo,omitempty"`

	// HarnessCPU is the CPU seconds wsbench itself (every process) used from the
	// connections being open to the end of the run's local phase: on a shared machine,
	// what it took away from the server.
	HarnessCPU float64 `json:"harness_cpu_seconds"`
	// HarnessConnectCPU is wsbench's CPU seconds spent opening the connections (dialing,
	// minting tokens, the client side of each handshake), and per connection: when it rivals
	// the server's CPU per handshake, handshakes/s measures the client as much as the server.
	HarnessConnectCPU        float64 `json:"harness_connect_cpu_seconds"`
	HarnessCPUPerHandshakeUs float64 `json:"harness_cpu_per_handshake_us,omitempty"`

	// Problems lists what went wrong in words: loss, duplicates, failed dials, connections
	// the server closed. Empty means a clean run.
	Problems []string `json:"problems"`
}

// ServerStats is what the server process spent on the run (with --pid): memory per open
// connection, and CPU per handshake and per delivery. The CPU figures do not depend on how
// fast the harness (which shares the machine) could go, so they compare engines fairly even
// when the harness is the bottleneck of a rate.
type ServerStats struct {
	PID int `json:"pid"`
	// PIDs lists every server of a fleet run; memory and CPU figures are their sums.
	PIDs            []int   `json:"pids,omitempty"`
	Before          ProcMem `json:"before"`
	After           ProcMem `json:"after"` // with every connection open
	Conns           int     `json:"conns"` // connections open when After was read
	PssPerConnBytes float64 `json:"pss_per_conn_bytes"`
	RssPerConnBytes float64 `json:"rss_per_conn_bytes"`
	// ConnectCPU is the server's CPU time from before the first dial to the last handshake
	// (and, for idle, the hold).
	ConnectCPU        float64 `json:"connect_cpu_seconds"`
	CPUPerHandshakeUs float64 `json:"cpu_per_handshake_us"`
	// DeliverCPU is the server's CPU time from the first publish until every process had
	// its messages (or gave up waiting).
	DeliverCPU       float64 `json:"deliver_cpu_seconds,omitempty"`
	CPUPerDeliveryUs float64 `json:"cpu_per_delivery_us,omitempty"`
	// RedisCPU is redis-server's CPU time over the same span as DeliverCPU (with
	// --redis-pid), to show when Redis rather than the service bounds a rate.
	RedisCPU float64 `json:"redis_cpu_seconds,omitempty"`
}

// pids lists the servers the figures sum over.
func (s *ServerStats) pids() []int { return pidList(s.PIDs, s.PID) }

// ChurnReport is what the churn scenario did.
type ChurnReport struct {
	Cycles    int     `json:"cycles"`
	Errors    int     `json:"errors"`
	Behind    int     `json:"behind"`
	Rate      float64 `json:"cycles_per_sec"`
	FDsBefore int     `json:"fds_before,omitempty"`
	FDsPeak   int     `json:"fds_peak,omitempty"`
	FDsAfter  int     `json:"fds_after,omitempty"`
}

// ReconnectReport is what the clients did after the server dropped them (with
// Params.Reconnect), summed over every harness process.
type ReconnectReport struct {
	Reconnected     int     `json:"reconnected"`       // connections that came back at least once
	Reconnects      int64   `json:"reconnects"`        // successful reconnect handshakes
	RedialFailures  int64   `json:"redial_failures"`   // reconnect handshakes that failed (then backed off)
	LastReconnectNs int64   `json:"last_reconnect_ns"` // when the last one succeeded
	Handshake       Summary `json:"handshake"`
	// Lost is what the reconnected connections missed while away (v1: everything published
	// to them meanwhile); Report.Lost includes it.
	Lost int64 `json:"lost"`
	// MaxLost is the most one reconnected connection lost.
	MaxLost int64 `json:"max_lost"`
}

// EchoReport is what the echo scenario did.
type EchoReport struct {
	Trips  int64   `json:"round_trips"`
	Lost   int64   `json:"lost"`
	PerSec float64 `json:"round_trips_per_sec"`
	RTT    Summary `json:"rtt"`
}

// newReport turns the summed parts into a report.
func newReport(p *Params, sum Part, pub *PublishStats) (*Report, error) {
	r := &Report{
		Scenario: p.Scenario, Label: p.Label, Run: p.Run, Procs: p.Procs,
		Date:  time.Now().UTC().Format(time.RFC3339),
		Conns: p.Conns, Connected: sum.Connected, DialErrors: sum.DialErrors,
		ClosedByServer: sum.ClosedByServer, CloseCodes: sum.CloseCodes, ErrorFrames: sum.ErrorFrames,
		Dropped: sum.Dropped, Unexpected: sum.Unexpected,
	}
	hs, err := sum.Handshake.histogram()
	if err != nil {
		return nil, err
	}
	r.Handshake = hs.Summary()
	if p.Scenario != ScenarioChurn {
		r.ConnectSeconds = float64(sum.ConnectEndNs-sum.ConnectStartNs) / 1e9
		r.ConnectRate = ratio(float64(sum.Connected), r.ConnectSeconds)
	}
	switch p.Scenario {
	case ScenarioFanout:
		r.Users, r.Messages = p.users(), p.Messages
	case ScenarioClassroom:
		r.Groups, r.Size, r.Repeat = p.Groups, p.Size, p.Repeat
	case ScenarioBroadcast:
		r.Repeat = p.Repeat
	}
	if pub != nil {
		lat, err := sum.Latency.histogram()
		if err != nil {
			return nil, err
		}
		r.PublishVia, r.Publish, r.PublishRate = p.PublishVia, pub, p.PublishRate
		r.Expected, r.Delivered, r.Lost = sum.Expected, sum.Delivered, sum.Lost
		r.Duplicated, r.Reordered = sum.Duplicated, sum.Reordered
		r.Latency = lat.Summary()
		if sum.LastNs > 0 {
			r.DeliverSeconds = float64(sum.LastNs-pub.start.UnixNano()) / 1e9
			r.DeliveredPerSec = ratio(float64(sum.Delivered), r.DeliverSeconds)
		}
	}
	if p.Scenario == ScenarioChurn {
		r.Churn = &ChurnReport{Cycles: sum.ChurnCycles, Errors: sum.ChurnErrors, Behind: sum.ChurnBehind,
			Rate: ratio(float64(sum.ChurnCycles), p.Duration.Seconds())}
	}
	if p.Reconnect != nil {
		hs, err := sum.Redial.histogram()
		if err != nil {
			return nil, err
		}
		r.Reconnect = &ReconnectReport{Reconnected: sum.Reconnected, Reconnects: sum.Reconnects,
			RedialFailures: sum.RedialFailures, LastReconnectNs: sum.LastReconnectNs, Handshake: hs.Summary(),
			Lost: sum.LostReconnected, MaxLost: sum.MaxLostOne}
	}
	r.Protocol = p.Protocol
	if p.Protocol == ProtocolV2 {
		r.V2 = &V2Report{Syncs: sum.Syncs, Unrecovered: sum.Unrecovered, ResumedSynced: sum.ResumedSynced,
			LastResumeSyncNs: sum.LastResumeSyncNs}
	}
	if p.Scenario == ScenarioEcho {
		rtt, err := sum.EchoRTT.histogram()
		if err != nil {
			return nil, err
		}
		r.Echo = &EchoReport{Trips: sum.EchoTrips, Lost: sum.EchoLost, PerSec: ratio(float64(sum.EchoTrips), sum.EchoSeconds), RTT: rtt.Summary()}
	}
	r.Problems = r.problems(p)
	return r, nil
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// problems names everything that makes the run less than clean.
func (r *Report) problems(p *Params) []string {
	var out []string
	if failed := r.Conns - r.Connected; p.Scenario != ScenarioChurn && failed > 0 {
		out = append(out, fmt.Sprintf("%d of %d connections failed to open (%s)", failed, r.Conns, countsText(r.DialErrors)))
	}
	lost := r.Lost
	if r.Reconnect != nil {
		// What a connection missed while it was away is the storm's measurement, not a fault.
		lost -= r.Reconnect.Lost
	}
	if lost > 0 {
		out = append(out, fmt.Sprintf("%d messages lost of %d expected", lost, r.Expected))
	}
	if r.Duplicated > 0 {
		out = append(out, fmt.Sprintf("%d messages duplicated", r.Duplicated))
	}
	if r.Unexpected > 0 {
		out = append(out, fmt.Sprintf("%d messages unexpected (wrong run, target or sequence)", r.Unexpected))
	}
	if r.ClosedByServer > 0 {
		out = append(out, fmt.Sprintf("server closed %d connections (codes %s)", r.ClosedByServer, countsText(r.CloseCodes)))
	}
	if len(r.ErrorFrames) > 0 {
		out = append(out, "server error messages: "+countsText(r.ErrorFrames))
	}
	if r.Dropped > 0 {
		out = append(out, fmt.Sprintf("%d consumers closed mid-run on purpose (--drop-consumers)", r.Dropped))
	}
	if r.Publish != nil && r.Publish.Errors > 0 {
		out = append(out, fmt.Sprintf("%d publishes failed", r.Publish.Errors))
	}
	if r.Publish != nil && r.Publish.NoSubscribers > 0 {
		out = append(out, fmt.Sprintf("%d publishes reached no subscriber", r.Publish.NoSubscribers))
	}
	if r.Churn != nil && r.Churn.Errors > 0 {
		out = append(out, fmt.Sprintf("%d churn cycles failed (%s)", r.Churn.Errors, countsText(r.DialErrors)))
	}
	if r.Churn != nil && r.Churn.Behind > 0 {
		out = append(out, fmt.Sprintf("%d churn ticks skipped: the target rate was not reached", r.Churn.Behind))
	}
	if r.Echo != nil && r.Echo.Lost > 0 {
		out = append(out, fmt.Sprintf("%d echoes unanswered", r.Echo.Lost))
	}
	return out
}

func countsText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// Write prints the report as readable lines.
func (r *Report) Write(w io.Writer) {
	title := r.Scenario
	if r.Label != "" {
		title += " [" + r.Label + "]"
	}
	fmt.Fprintf(w, "== %s  run %s  %s  procs %d\n", title, r.Run, r.Date, r.Procs)
	if r.Scenario != ScenarioChurn {
		fmt.Fprintf(w, "connections   %d/%d open in %.2fs  (%.0f/s)\n", r.Connected, r.Conns, r.ConnectSeconds, r.ConnectRate)
	}
	fmt.Fprintf(w, "handshake     %s\n", r.Handshake)
	if r.HarnessCPUPerHandshakeUs > 0 {
		fmt.Fprintf(w, "wsbench cpu   %.2fs connecting = %.0f µs/handshake\n", r.HarnessConnectCPU, r.HarnessCPUPerHandshakeUs)
	}
	if s := r.Server; s != nil {
		if len(s.PIDs) > 1 {
			fmt.Fprintf(w, "servers       %d (pids %v): the figures below are their sums\n", len(s.PIDs), s.PIDs)
		}
		fmt.Fprintf(w, "server pid %d Pss %d → %d KiB, Rss %d → %d KiB, fds %d → %d over %d conns\n",
			s.PID, s.Before.PssKiB, s.After.PssKiB, s.Before.RssKiB, s.After.RssKiB, s.Before.FDs, s.After.FDs, s.Conns)
		fmt.Fprintf(w, "server memory %.0f B/conn Pss  (%.0f B/conn Rss)\n", s.PssPerConnBytes, s.RssPerConnBytes)
		if s.PssPerConnBytes < 0 {
			fmt.Fprintln(w, "              (the server shrank: it was not fresh; read memory per connection from a fresh server)")
		}
		fmt.Fprintf(w, "server cpu    %.2fs connecting = %.0f µs/handshake", s.ConnectCPU, s.CPUPerHandshakeUs)
		if s.DeliverCPU > 0 {
			fmt.Fprintf(w, ";  %.2fs delivering = %.2f µs/delivery", s.DeliverCPU, s.CPUPerDeliveryUs)
		}
		fmt.Fprintln(w)
	}
	if r.Publish != nil {
		paced := ""
		if r.PublishRate > 0 {
			paced = fmt.Sprintf(", paced at %.0f/s", r.PublishRate)
		}
		fmt.Fprintf(w, "published     %d via %s in %.2fs (%d errors%s)\n", r.Publish.Published, r.PublishVia, r.Publish.Seconds, r.Publish.Errors, paced)
		fmt.Fprintf(w, "delivered     %d of %d in %.2fs  = %.0f deliveries/s\n", r.Delivered, r.Expected, r.DeliverSeconds, r.DeliveredPerSec)
		fmt.Fprintf(w, "lost %d  duplicated %d  unexpected %d  reordered %d\n", r.Lost, r.Duplicated, r.Unexpected, r.Reordered)
		fmt.Fprintf(w, "latency       %s\n", r.Latency)
		if s := r.Server; s != nil {
			fmt.Fprintf(w, "cpu used      server %.2fs  redis %.2fs  wsbench %.2fs  over %.2fs of wall time\n",
				s.DeliverCPU, s.RedisCPU, r.HarnessCPU, r.DeliverSeconds)
		}
	}
	if rc := r.Reconnect; rc != nil {
		fmt.Fprintf(w, "reconnected   %d connections (%d reconnects, %d failed redials), lost %d while away (at most %d by one)\n",
			rc.Reconnected, rc.Reconnects, rc.RedialFailures, rc.Lost, rc.MaxLost)
		fmt.Fprintf(w, "redial        %s\n", rc.Handshake)
	}
	if v := r.V2; v != nil {
		fmt.Fprintf(w, "v2            %d syncs, recovered:false %d %v, %d reconnected connections synced\n",
			v.Syncs, v.unrecoveredTotal(), v.Unrecovered, v.ResumedSynced)
	}
	if c := r.Churn; c != nil {
		fmt.Fprintf(w, "churn         %d cycles (%.0f/s), %d errors, %d ticks behind\n", c.Cycles, c.Rate, c.Errors, c.Behind)
		if c.FDsBefore > 0 {
			fmt.Fprintf(w, "server fds    before %d  peak %d  after %d\n", c.FDsBefore, c.FDsPeak, c.FDsAfter)
		}
	}
	if e := r.Echo; e != nil {
		fmt.Fprintf(w, "echo          %d round trips (%.0f/s), %d unanswered\n", e.Trips, e.PerSec, e.Lost)
		fmt.Fprintf(w, "echo rtt      %s\n", e.RTT)
	}
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "result        clean")
		return
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM       %s\n", p)
	}
}
