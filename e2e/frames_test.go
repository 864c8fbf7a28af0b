package e2e_test

import (
	"fmt"
	"strings"
	"testing"
)

// Close codes as the service records them. What the engines do with frames (echo, close
// codes, heartbeat, limits, slow consumers) is tested once for both engines in
// internal/enginetest; these tests check what the service adds: the disconnect metrics and
// the release of subscriptions and limit slots.

func TestNormalClientCloseIsRecordedAs1000(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		waitActive(t, n.Service, 1)
		if err := c.Conn.WriteClose(1000, nil); err != nil {
			t.Fatal(err)
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1000"}`, 1, wait)
		n.WaitMetric(t, "websocket_connections_active", 0, wait)
		n.WaitMetric(t, "backplane_subscriptions_active", 0, wait)
	})
}

func TestAbruptDisconnectIsRecordedAs1006AndReleasesEverything(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, map[string]string{"MAX_CONNECTIONS_PER_USER": "1"})
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1", "c7"), rawOptions{})
		waitActive(t, n.Service, 1)
		c.Close() // no close frame
		n.WaitMetric(t, `websocket_disconnects_total{code="1006"}`, 1, wait)
		n.WaitMetric(t, "websocket_connections_active", 0, wait)
		n.WaitMetric(t, "backplane_subscriptions_active", 0, wait)
		if n.rdb != nil {
			eventually(t, wait, "PUBSUB CHANNELS empty", func() bool { return len(n.subscriptions(t)) == 0 })
		}
		// The per-user slot is free again.
		d := dial(t, n.Service, "u1")
		d.Send(t, "back")
		expectText(t, d, "Echo: back")
	})
}

func opcodes(frames []frame) string {
	var b strings.Builder
	for _, f := range frames {
		fmt.Fprintf(&b, "%#x ", f.Op)
		if f.Op == opClose {
			fmt.Fprintf(&b, "(%d) ", f.CloseCode())
		}
	}
	return b.String()
}

// slowConsumerEnv: a reading client never has more than one batch (128 KiB) queued; a client
// that never reads passes the limit once the kernel buffers (at most ~4 MiB of socket send
// buffer here) are full.
var slowConsumerEnv = map[string]string{"SEND_QUEUE_LIMIT": "524288"}

const (
	slowBatches   = 64 // of 16 messages of 8 KiB: 8 MiB in all
	slowBatchSize = 16
)
