package bench

import (
	"fmt"
	"maps"
	"time"
)

// Part is what one harness process reports of its share of a run. Parts are summed into a
// Report; across processes they travel as JSON on the worker's stdout.
type Part struct {
	Conns          int            `json:"conns"` // connections this process was to open
	Connected      int            `json:"connected"`
	DialErrors     map[string]int `json:"dial_errors,omitempty"`
	ConnectStartNs int64          `json:"connect_start_ns"`
	ConnectEndNs   int64          `json:"connect_end_ns"`
	Handshake      wireHistogram  `json:"handshake"`

	Expected   int64         `json:"expected"`
	Delivered  int64         `json:"delivered"`
	Lost       int64         `json:"lost"`
	Duplicated int64         `json:"duplicated"`
	Unexpected int64         `json:"unexpected"`
	Reordered  int64         `json:"reordered"`
	FirstNs    int64         `json:"first_recv_ns"`
	LastNs     int64         `json:"last_recv_ns"`
	Latency    wireHistogram `json:"latency"`

	ClosedByServer int            `json:"closed_by_server"`
	CloseCodes     map[string]int `json:"close_codes,omitempty"`
	ErrorFrames    map[string]int `json:"error_frames,omitempty"`
	Dropped        int            `json:"dropped"`

	ChurnCycles int           `json:"churn_cycles"`
	ChurnErrors int           `json:"churn_errors"`
	ChurnBehind int           `json:"churn_behind"` // ticks skipped because too many cycles were in flight
	EchoTrips   int64         `json:"echo_trips"`
	EchoLost    int64         `json:"echo_lost"` // echoes not answered within echoTimeout
	EchoRTT     wireHistogram `json:"echo_rtt"`
	EchoSeconds float64       `json:"echo_seconds"`
	// Reconnect storm (with Params.Reconnect): successful reconnects, failed reconnect
	// handshakes, when the last one succeeded, their handshake times, how many connections
	// reconnected, and what those connections lost (the rest of Lost is what connections that
	// never dropped lost, which must be nothing).
	Reconnects      int64         `json:"reconnects,omitempty"`
	RedialFailures  int64         `json:"redial_failures,omitempty"`
	LastReconnectNs int64         `json:"last_reconnect_ns,omitempty"`
	Redial          wireHistogram `json:"redial"`
	Reconnected     int           `json:"reconnected,omitempty"`
	LostReconnected int64         `json:"lost_reconnected,omitempty"`
	MaxLostOne      int64         `json:"max_lost_one,omitempty"` // the most one reconnected connection lost
	// v2 clients (Params.Protocol v2): sync frames, recovered:false ones by reason, reconnected
	// connections synced since, and when the last of those syncs came.
	Syncs            int64          `json:"syncs,omitempty"`
	Unrecovered      map[string]int `json:"unrecovered,omitempty"`
	ResumedSynced    int            `json:"resumed_synced,omitempty"`
	LastResumeSyncNs int64          `json:"last_resume_sync_ns,omitempty"`
	// HarnessCPU is a worker process's own CPU seconds from its connections being open to
	// its part being ready (0 for the parent's own share, which the parent measures).
	HarnessCPU float64 `json:"harness_cpu_seconds"`
	// HarnessConnectCPU is a worker's own CPU seconds spent opening its connections.
	HarnessConnectCPU float64 `json:"harness_connect_cpu_seconds"`
}

// partOf reads a fleet's accounting once its connections are closed.
func partOf(f *fleet, connected int, start, end time.Time) Part {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := Part{
		Conns: f.p.Hi - f.p.Lo, Connected: connected, DialErrors: maps.Clone(f.dialErrors),
		ConnectStartNs: start.UnixNano(), ConnectEndNs: end.UnixNano(),
		Handshake: f.handshake.wire(),
		Expected:  f.expected(), Delivered: f.delivered.Load(), Lost: f.lost(),
		Duplicated: f.duplicated.Load(), Unexpected: f.unexpected.Load(), Reordered: f.reordered.Load(),
		FirstNs: f.firstRecv.Load(), LastNs: f.lastRecv.Load(), Latency: f.latency.wire(),
		ClosedByServer: int(f.closedByServer.Load()), CloseCodes: maps.Clone(f.closeCodes),
		ErrorFrames: maps.Clone(f.errorFrames), Dropped: int(f.dropped.Load()),
		EchoTrips: f.echoes.Load(), EchoLost: f.echoLost, EchoRTT: f.echoRTT.wire(),
		Reconnects: f.reconnects.Load(), RedialFailures: f.redialFailures.Load(),
		LastReconnectNs: f.lastReconnect.Load(), Redial: f.redial.wire(),
		Reconnected: f.reconnected(),
		Syncs:       f.syncs.Load(), Unrecovered: maps.Clone(f.unrecovered),
		ResumedSynced: f.resumedSynced(), LastResumeSyncNs: f.lastResumeSync.Load(),
	}
	p.LostReconnected, p.MaxLostOne = f.lostReconnected()
	return p
}

// add sums o into p. Times are combined as the earliest start and the latest end.
func (p *Part) add(o Part) error {
	for _, pair := range [][2]*wireHistogram{{&p.Handshake, &o.Handshake}, {&p.Latency, &o.Latency}, {&p.EchoRTT, &o.EchoRTT}, {&p.Redial, &o.Redial}} {
		merged, err := mergeWire(*pair[0], *pair[1])
		if err != nil {
			return fmt.Errorf("merge part: %w", err)
		}
		*pair[0] = merged
	}
	p.Conns += o.Conns
	p.Connected += o.Connected
	p.DialErrors = addCounts(p.DialErrors, o.DialErrors)
	p.ConnectStartNs = earliest(p.ConnectStartNs, o.ConnectStartNs)
	p.ConnectEndNs = max(p.ConnectEndNs, o.ConnectEndNs)
	p.Expected += o.Expected
	p.Delivered += o.Delivered
	p.Lost += o.Lost
	p.Duplicated += o.Duplicated
	p.Unexpected += o.Unexpected
	p.Reordered += o.Reordered
	p.FirstNs = earliest(p.FirstNs, o.FirstNs)
	p.LastNs = max(p.LastNs, o.LastNs)
	p.ClosedByServer += o.ClosedByServer
	p.CloseCodes = addCounts(p.CloseCodes, o.CloseCodes)
	p.ErrorFrames = addCounts(p.ErrorFrames, o.ErrorFrames)
	p.Dropped += o.Dropped
	p.ChurnCycles += o.ChurnCycles
	p.ChurnErrors += o.ChurnErrors
	p.ChurnBehind += o.ChurnBehind
	p.EchoTrips += o.EchoTrips
	p.EchoLost += o.EchoLost
	p.EchoSeconds = max(p.EchoSeconds, o.EchoSeconds)
	p.Reconnects += o.Reconnects
	p.RedialFailures += o.RedialFailures
	p.LastReconnectNs = max(p.LastReconnectNs, o.LastReconnectNs)
	p.Reconnected += o.Reconnected
	p.LostReconnected += o.LostReconnected
	p.MaxLostOne = max(p.MaxLostOne, o.MaxLostOne)
	p.Syncs += o.Syncs
	p.Unrecovered = addCounts(p.Unrecovered, o.Unrecovered)
	p.ResumedSynced += o.ResumedSynced
	p.LastResumeSyncNs = max(p.LastResumeSyncNs, o.LastResumeSyncNs)
	p.HarnessCPU += o.HarnessCPU
	p.HarnessConnectCPU += o.HarnessConnectCPU
	return nil
}

// earliest is the smaller of two unix times, 0 standing for "none".
func earliest(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

func addCounts(dst, src map[string]int) map[string]int {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = map[string]int{}
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

func mergeWire(a, b wireHistogram) (wireHistogram, error) {
	ha, err := a.histogram()
	if err != nil {
		return wireHistogram{}, err
	}
	hb, err := b.histogram()
	if err != nil {
		return wireHistogram{}, err
	}
	ha.Merge(hb)
	return ha.wire(), nil
}
