//go:build linux

package eventloop

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/heaptest"
	"github.com/huleedu/websocket-service/session"
)

// A frame header is a claim, not a fact: connections that each sent only the header of a
// frame of MaxMessageSize (1 MiB) cost the server a few KiB each, not the megabyte announced.
func TestHeaderOnlyConnectionsCostAFewKiBNotTheAnnouncedLength(t *testing.T) {
	const (
		size  = 1 << 20
		conns = 100
	)
	h := newHarness(t, func(o *session.Options) { o.Shards, o.MaxMessageSize = 1, size })
	clients := make([]*rawClient, conns)
	for i := range clients {
		clients[i] = h.dialRaw(t, fmt.Sprint("u", i), nil)
	}
	probe := h.dialRaw(t, "probe", nil)
	before := heaptest.Live()
	header := binary.BigEndian.AppendUint64([]byte{0x82, 0xFF}, size)
	header = append(header, 1, 2, 3, 4)
	for _, c := range clients {
		c.send(header)
	}
	// A barrier: the one shard answers the probe's ping in the same turn as it reads the
	// headers, which were in the kernel before the ping.
	probe.send(clientFrame(true, 0, opPing, []byte("barrier"), false))
	if op, p := probe.expectFrame(10 * time.Second); op != opPong || string(p) != "barrier" {
		t.Fatalf("probe got op %#x %q, want the pong", op, p)
	}
	heaptest.PerItem(t, before, conns, 8<<10, fmt.Sprintf("a connection that sent a bare header announcing %d bytes", size))
	runtime.KeepAlive(clients) // the clients' own buffers are not the server's cost
}
