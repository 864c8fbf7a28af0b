package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/huleedu/websocket-service/internal/heaptest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// What one connection can make the server hold, and the sizes it must still serve.

// A backplane payload that is not UTF-8 cannot be a text frame (a browser would fail the
// connection): both engines drop it, count it, and deliver what follows.
func TestNonUTF8PayloadFromRedisIsDroppedAndCountedAndTheNextArrives(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, redisBP, nil)
		c := dial(t, n.Service, "u1", "class7")
		waitActive(t, n.Service, 1)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		ch := n.App.Server().Topics().GroupChannel("class7")
		for _, p := range []string{"bad \xff\xfe bytes", "bad again \xc3"} {
			if err := n.rdb.Publish(ctx, ch, p).Err(); err != nil {
				t.Fatalf("PUBLISH: %v", err)
			}
		}
		n.publish(t, group("class7"), `{"after":"bad"}`)
		expectText(t, c, `{"after":"bad"}`)
		n.WaitMetric(t, `websocket_messages_dropped_total{reason="invalid_utf8"}`, 2, wait)
		stillOpen(t, c)
	})
}

// A frame whose first bytes arrived must be complete within session.FrameTimeout: bytes that
// trickle in do not extend it (the server holds the frame meanwhile). Both engines then close
// 1001 and count the frame.
func TestIncompleteFrameIsClosed1001AtItsDeadlineWhateverTrickles(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		f := encodeFrame(true, opBinary, bytes.Repeat([]byte("a"), 1000), true)
		c.write(t, f[:8]) // header and mask key
		start := time.Now()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for i := 8; i < len(f); i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write(f[i : i+1]); err != nil {
					return
				}
			}
		}()
		frames, err := c.readUntilClose(3 * session.FrameTimeout)
		if err != nil || lastClose(frames) != 1001 {
			t.Fatalf("after %v: frames %s, error %v; want a close 1001", time.Since(start), opcodes(frames), err)
		}
		if took := time.Since(start); took < session.FrameTimeout-time.Second {
			t.Fatalf("closed after %v, before the frame's deadline of %v", took, session.FrameTimeout)
		}
		n.WaitMetric(t, `websocket_messages_dropped_total{reason="incomplete_frame"}`, 1, wait)
		n.WaitMetric(t, `websocket_disconnects_total{code="1001"}`, 1, wait)
	})
}

// A large frame has the time its announced length allows on top of session.FrameTimeout: a
// 1 MiB message from a link that stalls for longer than FrameTimeout is still echoed (a fixed
// deadline cut any large message from a slow link, and a 16 MiB echo on a loaded machine).
func TestLargeFrameHasTheTimeItsLengthAllows(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		const size = 1 << 20 // FrameTime: 16 s on top of FrameTimeout
		n := startNode(t, engine, embedded, map[string]string{"MAX_MESSAGE_SIZE": "2097152"})
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		f := encodeFrame(true, opText, bytes.Repeat([]byte("a"), size), true)
		sent := 16
		c.write(t, f[:sent])
		// Time under test: past FrameTimeout (plus the wheel's granularity and a loaded
		// machine's delay), a slow link's trickle, which also keeps the connection from falling
		// silent.
		past := time.Now().Add(session.FrameTimeout + 3*time.Second)
		for time.Now().Before(past) {
			time.Sleep(250 * time.Millisecond)
			c.write(t, f[sent:sent+256])
			sent += 256
		}
		c.write(t, f[sent:])
		want := "Echo: " + strings.Repeat("a", size)
		deadline := time.Now().Add(3 * wait)
		for {
			fr, err := c.readFrame(deadline)
			if err != nil {
				t.Fatalf("no echo of the %d-byte frame: %v", size, err)
			}
			if fr.Op == opPing {
				continue
			}
			if fr.Op != opText || string(fr.Payload) != want {
				t.Fatalf("got a frame op %d of %d bytes (close %d), want the %d-byte echo", fr.Op, len(fr.Payload), fr.CloseCode(), len(want))
			}
			return
		}
	})
}

// floodQueueLimit is the flood tests' SEND_QUEUE_LIMIT: small, so a flood passes it soon after
// the kernel buffers fill.
const floodQueueLimit = 256 << 10

// floodEnv: a small send queue, and no inbound frame limit, so the flood reaches the queue.
var floodEnv = map[string]string{"SEND_QUEUE_LIMIT": strconv.Itoa(floodQueueLimit), "INBOUND_RATE_PER_CONNECTION": "0"}

// floodHeapMargin bounds the heap a flooded server may grow by: the queue's limit plus a small
// constant for the connection's buffers, the garbage GOGC=10 leaves between collections and
// the rest of the test process. Measured: 0.9-2.2 MiB peak growth over 5 runs of each engine
// and flood (2.4-2.9 MiB at the default GOGC); with the limit at 256 times this one, the ping
// floods grew the heap by 52-61 MiB before their 1013, and without it by hundreds of MiB.
const floodHeapMargin = floodQueueLimit + 4<<20

// Every frame the server queues counts against SEND_QUEUE_LIMIT, pongs and echoes included: a
// client that sends as fast as it can and never reads is closed 1013, and the server's memory
// stays bounded meanwhile (with INBOUND_RATE_PER_CONNECTION off, so the flood reaches the queue).
func TestFloodFromAClientThatNeverReadsIsClosed1013WithBoundedMemory(t *testing.T) {
	floods := []struct {
		name  string
		frame []byte
	}{
		{"pings", encodeFrame(true, opPing, nil, true)},
		{"text", encodeFrame(true, opText, []byte("x"), true)},
		{"binary", encodeFrame(true, opBinary, []byte("y"), true)},
	}
	// Not parallel: the heap is measured, so nothing else may run in the process meanwhile.
	for _, engine := range servicetest.Engines() {
		for _, fl := range floods {
			t.Run(engine+"/"+fl.name, func(t *testing.T) {
				n := startNode(t, engine, embedded, floodEnv)
				c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "flooder"), rawOptions{ReceiveBuf: 4096})
				waitActive(t, n.Service, 1)
				// What the server holds is live heap; garbage, which the collector lets grow to
				// the live heap of the whole test process at the default GOGC, is kept small.
				defer debug.SetGCPercent(debug.SetGCPercent(10))
				before := heaptest.Live()
				stop := make(chan struct{})
				flooded := make(chan struct{})
				go func() {
					defer close(flooded)
					batch := bytes.Repeat(fl.frame, 1024)
					for {
						select {
						case <-stop:
							return
						default:
						}
						_ = c.SetWriteDeadline(time.Now().Add(time.Second))
						if _, err := c.Write(batch); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
							return // the server closed the connection
						}
					}
				}()
				peak := watchHeap(stop)
				// Before the queue can pass its limit the server's socket send buffer must fill,
				// and the kernel packs tiny pongs and echoes into it by the million (1-5 s here
				// alone, over 20 s with the whole suite running under -race): a minute.
				started := time.Now()
				n.WaitMetric(t, `websocket_disconnects_total{code="1013"}`, 1, time.Minute)
				t.Logf("closed 1013 after %v of flood", time.Since(started).Round(time.Millisecond))
				close(stop)
				<-flooded
				if got := n.Metric(t, `websocket_messages_dropped_total{reason="slow_consumer"}`); got < 1 {
					t.Errorf(`websocket_messages_dropped_total{reason="slow_consumer"} = %v, want > 0`, got)
				}
				grew := int64(<-peak) - before
				t.Logf("heap grew by at most %d KiB during the flood", grew>>10)
				if grew > floodHeapMargin {
					t.Fatalf("the heap grew by %d KiB for one client, want within %d KiB", grew>>10, floodHeapMargin>>10)
				}
			})
		}
	}
}

// watchHeap samples the heap in use until stop is closed and then sends the highest reading.
func watchHeap(stop <-chan struct{}) <-chan uint64 {
	peak := make(chan uint64, 1)
	go func() {
		var high uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			high = max(high, m.HeapAlloc)
			select {
			case <-stop:
				peak <- high
				return
			case <-tick.C:
			}
		}
	}()
	return peak
}

// SEND_QUEUE_LIMIT bounds what waits behind the frame being written, not the size of one
// message: a message larger than the limit reaches every idle connection of its audience,
// and a small one published right behind it queues normally and arrives after it.
func TestMessageLargerThanTheSendQueueLimitReachesTheWholeAudienceAndWhatFollowsIt(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"SEND_QUEUE_LIMIT": "1048576"})
		clients := make([]*servicetest.Client, 4)
		for i := range clients {
			clients[i] = dial(t, n.Service, fmt.Sprint("u", i), "class7")
		}
		waitActive(t, n.Service, len(clients))
		big := `{"pad":"` + strings.Repeat("p", 2200000) + `"}`
		for _, target := range []registry.Target{group("class7"), everyone} {
			n.Publish(t, target, big)
			n.Publish(t, target, `{"small":"behind"}`)
			for i, c := range clients {
				if got := c.NextText(t, 2*wait); got != big {
					t.Fatalf("%v, client %d: got %d bytes (%.40q), want the %d-byte message", target.Kind, i, len(got), got, len(big))
				}
				if got := c.NextText(t, wait); got != `{"small":"behind"}` {
					t.Fatalf("%v, client %d: got %.40q after the large message, want the small one", target.Kind, i, got)
				}
			}
		}
		for _, c := range clients {
			stillOpen(t, c)
		}
		if got := n.Metric(t, `websocket_disconnects_total{code="1013"}`); got != 0 {
			t.Fatalf("%v connections closed 1013", got)
		}
	})
}

// A message of exactly MAX_MESSAGE_SIZE is echoed whole, whatever that size is: the engines'
// own write limits must not be smaller than what the configuration lets in.
func TestMessageOfMaxMessageSizeIsEchoedAt16MiB(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		const size = 16 << 20
		n := startNode(t, engine, embedded, map[string]string{"MAX_MESSAGE_SIZE": "16777216"})
		conn, _ := coderDial(t, n.DialURL(n.Token(t, "u1")), nil)
		conn.SetReadLimit(size + 1024)
		text := strings.Repeat("a", size)
		ctx, cancel := context.WithTimeout(context.Background(), 12*wait) // 16 MiB each way, under -race on a busy machine
		defer cancel()
		if err := conn.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
			t.Fatalf("write: %v", err)
		}
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("no echo of the %d-byte message: %v", size, err)
		}
		if typ != websocket.MessageText || len(data) != len("Echo: ")+size || string(data[:6]) != "Echo: " {
			t.Fatalf("got a %v message of %d bytes (%.20q…), want the text echo of %d bytes", typ, len(data), data, len("Echo: ")+size)
		}
	})
}
