// Package telemetry owns the service's Prometheus metrics (docs/OPERATIONS.md "Metrics"). One
// Metrics value is made at start-up and handed to every component that records something;
// there is no global registry. Every label takes its value from a small fixed set, never from
// a user id.
package telemetry

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Results of an upgrade attempt (label of websocket_connections_total).
const (
	ResultAccepted       = "accepted"
	ResultAuthFailed     = "auth_failed"
	ResultOriginRejected = "origin_rejected"
	ResultLimitReached   = "limit_reached"
	ResultRateLimited    = "rate_limited"
	// ResultBackplaneUnavailable: the backplane could not confirm the connection's
	// subscriptions within the subscribe timeout (Redis down or stalled); answered 503.
	ResultBackplaneUnavailable = "backplane_unavailable"
)

// Reasons a message was dropped (label of websocket_messages_dropped_total).
const (
	DropSlowConsumer = "slow_consumer" // the connection was closed 1013 instead
	DropClosed       = "closed"        // the target connection was already closing
	DropUnknown      = "unknown_channel"
	DropTooLarge     = "too_large" // inbound message over MAX_MESSAGE_SIZE
	DropRateLimited  = "rate_limited"
	DropShardStopped = "shard_stopped" // an epoll shard stopped (or failed) before applying it
	DropInvalidUTF8  = "invalid_utf8"  // a backplane payload that cannot be a text frame
	// DropIncompleteFrame: an inbound frame not completed within its deadline (close 1001).
	DropIncompleteFrame = "incomplete_frame"
)

// Results of one stream's resume (label of websocket_recovery_total): recovered, or the
// reason it was not (the v2 sync frame's reasons, docs/PROTOCOL.md).
const (
	RecoveryRecovered   = "recovered"
	RecoveryNew         = "new"
	RecoveryExpired     = "expired"
	RecoveryTrimmed     = "trimmed"
	RecoveryEpoch       = "epoch"
	RecoveryLimit       = "limit"
	RecoveryUnavailable = "unavailable"
)

// Results of a gap repair (label of backplane_gap_repairs_total).
const (
	RepairRepaired = "repaired" // the missing messages were read from history and delivered
	RepairLost     = "lost"     // history could not fill the hole: a gap notice went out instead
)

var repairResults = []string{RepairRepaired, RepairLost}

var (
	recoveryResults = []string{RecoveryRecovered, RecoveryNew, RecoveryExpired, RecoveryTrimmed, RecoveryEpoch, RecoveryLimit, RecoveryUnavailable}
	results         = []string{ResultAccepted, ResultAuthFailed, ResultOriginRejected, ResultLimitReached, ResultRateLimited, ResultBackplaneUnavailable}
	dropReasons     = []string{DropSlowConsumer, DropClosed, DropUnknown, DropTooLarge, DropRateLimited, DropShardStopped, DropInvalidUTF8, DropIncompleteFrame}
	// closeCodes are the codes a disconnect is counted under; anything else is "other".
	closeCodes = []uint16{1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013}
)

// Metrics holds every metric of the service.
type Metrics struct {
	set *metrics.Set

	ConnectionsActive *metrics.Gauge
	HandshakeDuration *metrics.PrometheusHistogram
	MessagesSent      *metrics.Counter
	MessagesReceived  *metrics.Counter

	BackplaneReceived      *metrics.Counter
	BackplaneSubscriptions *metrics.Gauge
	BackplaneReconnects    *metrics.Counter
	BackplaneConnected     *metrics.Gauge
	// BackplaneDisconnectedSeconds accumulates the time backplane_connected was 0 after
	// start; BackplaneDisconnectedSince is the Unix time the current outage began, 0 while
	// connected.
	BackplaneDisconnectedSeconds *metrics.FloatCounter
	BackplaneDisconnectedSince   *metrics.Gauge

	// RecoveryReplayed counts the messages replayed to resuming v2 connections.
	RecoveryReplayed *metrics.Counter

	recovery    map[string]*metrics.Counter
	connections map[string]*metrics.Counter
	gapRepairs  map[string]*metrics.Counter
	dropped     map[string]*metrics.Counter
	disconnects map[uint16]*metrics.Counter
	otherClose  *metrics.Counter
}

// New creates the metric set.
func New() *Metrics {
	s := metrics.NewSet()
	m := &Metrics{
		set:                          s,
		ConnectionsActive:            s.NewGauge("websocket_connections_active", nil),
		HandshakeDuration:            s.NewPrometheusHistogram("websocket_handshake_duration_seconds"),
		MessagesSent:                 s.NewCounter("websocket_messages_sent_total"),
		MessagesReceived:             s.NewCounter("websocket_messages_received_total"),
		BackplaneReceived:            s.NewCounter("backplane_messages_received_total"),
		BackplaneSubscriptions:       s.NewGauge("backplane_subscriptions_active", nil),
		BackplaneReconnects:          s.NewCounter("backplane_reconnects_total"),
		BackplaneConnected:           s.NewGauge("backplane_connected", nil),
		BackplaneDisconnectedSeconds: s.NewFloatCounter("backplane_disconnected_seconds_total"),
		BackplaneDisconnectedSince:   s.NewGauge("backplane_disconnected_since_timestamp_seconds", nil),
		RecoveryReplayed:             s.NewCounter("websocket_recovery_replayed_messages_total"),
		recovery:                     map[string]*metrics.Counter{},
		connections:                  map[string]*metrics.Counter{},
		gapRepairs:                   map[string]*metrics.Counter{},
		dropped:                      map[string]*metrics.Counter{},
		disconnects:                  map[uint16]*metrics.Counter{},
		otherClose:                   s.NewCounter(`websocket_disconnects_total{code="other"}`),
	}
	for _, r := range recoveryResults {
		m.recovery[r] = s.NewCounter(fmt.Sprintf(`websocket_recovery_total{result=%q}`, r))
	}
	for _, r := range results {
		m.connections[r] = s.NewCounter(fmt.Sprintf(`websocket_connections_total{result=%q}`, r))
	}
	for _, r := range repairResults {
		m.gapRepairs[r] = s.NewCounter(fmt.Sprintf(`backplane_gap_repairs_total{result=%q}`, r))
	}
	for _, r := range dropReasons {
		m.dropped[r] = s.NewCounter(fmt.Sprintf(`websocket_messages_dropped_total{reason=%q}`, r))
	}
	for _, c := range closeCodes {
		m.disconnects[c] = s.NewCounter(fmt.Sprintf(`websocket_disconnects_total{code="%d"}`, c))
	}
	return m
}

// Connection counts one upgrade attempt by result (a Result* constant).
func (m *Metrics) Connection(result string) {
	if c, ok := m.connections[result]; ok {
		c.Inc()
	}
}

// Recovery counts one stream's resume by result (a Recovery* constant).
func (m *Metrics) Recovery(result string) {
	if c, ok := m.recovery[result]; ok {
		c.Inc()
	}
}

// Dropped counts n messages dropped for reason (a Drop* constant).
func (m *Metrics) Dropped(reason string, n int) {
	if c, ok := m.dropped[reason]; ok {
		c.Add(n)
	}
}

// GapRepair counts one hole in a stream by how it ended (a Repair* constant).
func (m *Metrics) GapRepair(result string) {
	if c, ok := m.gapRepairs[result]; ok {
		c.Inc()
	}
}

// Disconnect counts one closed connection by its close code.
func (m *Metrics) Disconnect(code uint16) {
	if c, ok := m.disconnects[code]; ok {
		c.Inc()
		return
	}
	m.otherClose.Inc()
}

// Handshake records how long an upgrade took, from request to registered connection.
func (m *Metrics) Handshake(since time.Time) { m.HandshakeDuration.UpdateDuration(since) }

// ShardConnections registers eventloop_shard_connections{shard} read from f at scrape time.
func (m *Metrics) ShardConnections(shard int, f func() float64) {
	m.set.GetOrCreateGauge(`eventloop_shard_connections{shard="`+strconv.Itoa(shard)+`"}`, f)
}

// ShardQueueBytes registers eventloop_shard_queue_bytes{shard}, read from f at scrape time:
// the delivery bytes the shard has queued and not yet applied (bounded; Deliver waits at the
// bound).
func (m *Metrics) ShardQueueBytes(shard int, f func() float64) {
	m.set.GetOrCreateGauge(`eventloop_shard_queue_bytes{shard="`+strconv.Itoa(shard)+`"}`, f)
}

// ShardsFailed registers eventloop_shards_failed, read from f at scrape time: the epoll
// engine's shards that stopped on an error (the node is not ready while it is above 0).
func (m *Metrics) ShardsFailed(f func() float64) {
	m.set.GetOrCreateGauge("eventloop_shards_failed", f)
}

// WritePrometheus writes the service's metrics followed by Go runtime, process and file
// descriptor metrics (process_open_fds against process_max_fds is how an operator sees a pod
// nearing its connection ceiling).
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
	metrics.WriteFDMetrics(w)
}
