package gwsengine

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/heaptest"
	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// A frame header is a claim, not a fact: connections that each sent only the header of a
// frame of MaxMessageSize (1 MiB) cost the server a few KiB each, not the megabyte announced.
func TestHeaderOnlyConnectionsCostAFewKiBNotTheAnnouncedLength(t *testing.T) {
	const (
		size  = 1 << 20
		conns = 100
	)
	r := newRig(t, withMaxMessage(size))
	clients := make([]*rawClient, conns)
	for i := range clients {
		clients[i] = dialRaw(t, r, r.token(fmt.Sprint("u", i), nil, time.Hour), 0)
	}
	r.waitConns(conns)
	before := heaptest.Live()
	header := append(rfc6455.AppendHeader(nil, 0x82, size, true), 1, 2, 3, 4)
	sendAll(t, r, clients, header)
	// gws allocated a frame's payload (before the fix) after parsing its header and before
	// reading the payload's first byte: once every wire has read a byte sent after the header,
	// whatever gws does with a header it was given is done.
	sendAll(t, r, clients, []byte{0})
	heaptest.PerItem(t, before, conns, 8<<10, fmt.Sprintf("a connection that sent a bare header announcing %d bytes", size))
	runtime.KeepAlive(clients) // the clients' own buffers are not the server's cost
}

// sendAll writes b to every client and waits until the server has read it from each: its
// wire has stamped a read since.
func sendAll(t *testing.T, r *rig, clients []*rawClient, b []byte) {
	t.Helper()
	sent := time.Now().UnixNano()
	for _, c := range clients {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("the server to read %d bytes from every client", len(b)), func() bool {
		for _, c := range r.eng.snapshot() {
			if c.wire.lastRead.Load() < sent {
				return false
			}
		}
		return true
	})
}

// The wire hands gws a large frame only once it is complete, whatever pieces it arrives in,
// and passes small frames and whole frames straight through.
func TestWireHoldsALargeFrameUntilCompleteAndPassesTheRest(t *testing.T) {
	server, client := tcpPair(t)
	w := newWire(server, 1<<20, false, nil, nil)
	big := strings.Repeat("b", 100<<10)
	stream := append(maskedFrame(0x82, "hi"), maskedFrame(0x82, big)...)
	stream = append(stream, maskedFrame(0x81, "after")...)
	go func() {
		for i := 0; i < len(stream); i += 1000 {
			_, _ = client.Write(stream[i:min(i+1000, len(stream))])
			time.Sleep(time.Millisecond) // the trickle under test: the frame arrives in pieces
		}
	}()
	got := make([]byte, 0, len(stream))
	buf := make([]byte, 4096)
	bigStart := len(maskedFrame(0x82, "hi"))
	bigEnd := bigStart + len(maskedFrame(0x82, big))
	for len(got) < len(stream) {
		n, err := w.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		if len(got) < bigEnd && len(got)+n > bigStart && len(w.pend) == 0 && len(got)+n < bigEnd && len(w.ready) == 0 {
			t.Fatalf("gws got bytes %d..%d of the large frame before it was complete", len(got), len(got)+n)
		}
		if cap(w.pend) > 2*len(w.pend)+64 {
			t.Fatalf("holding %d bytes in a buffer of %d", len(w.pend), cap(w.pend))
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != string(stream) {
		t.Fatal("the stream reached gws altered")
	}
}

// maskedFrame encodes a client frame with a fixed mask key.
func maskedFrame(b0 byte, payload string) []byte {
	return rfc6455.AppendMasked(rfc6455.AppendHeader(nil, b0, uint64(len(payload)), true), []byte(payload), [4]byte{1, 2, 3, 4})
}
