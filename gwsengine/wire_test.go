package gwsengine

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// hugeHeader is a masked binary frame header announcing length bytes, and the mask key.
func hugeHeader(length uint64) []byte {
	return append(rfc6455.AppendHeader(nil, 0x82, length, true), 1, 2, 3, 4)
}

// A frame length with the top bit set used to become a negative int inside gws and panic its
// read loop, taking the process down. It is refused with the ErrorMessage and 1009 instead,
// Hooks.Closed runs once, and the engine keeps serving.
func TestHugeFrameLengthCloses1009WithoutCrashing(t *testing.T) {
	for _, length := range []uint64{1 << 63, 1<<64 - 1, 1<<63 - 1, 1 << 40} {
		for _, split := range []bool{false, true} {
			t.Run(fmt.Sprintf("length=%d/split=%v", length, split), func(t *testing.T) {
				r := newRig(t, withMaxMessage(1024))
				c := dialRaw(t, r, r.token("alice", nil, time.Hour), 0)
				// A well-formed text frame first, so the header is found mid-stream.
				c.send(t, 0x81, []byte("hello"))
				out := append(hugeHeader(length), "0123456789"...)
				if split {
					// One byte at a time: the header arrives over several reads.
					for i := range out {
						if _, err := c.Write(out[i : i+1]); err != nil {
							t.Fatal(err)
						}
						time.Sleep(time.Millisecond) // the trickle under test, not a wait
					}
				} else if _, err := c.Write(out); err != nil {
					t.Fatal(err)
				}
				code, before := c.readUntilClose(t, 5*time.Second)
				if code != message.CloseMessageTooBig {
					t.Fatalf("close code %d, want 1009", code)
				}
				if len(before) != 2 || string(before[0]) != message.EchoPrefix+"hello" ||
					errorCode(t, before[1]) != message.CodeMessageTooLarge {
					t.Errorf("frames before the close: %q, want the echo and MESSAGE_TOO_LARGE", before)
				}
				if cl := r.hooks.wait(t, 5*time.Second); cl.code != message.CloseMessageTooBig {
					t.Errorf("Hooks.Closed code %d, want 1009", cl.code)
				}

				// The engine still serves a second client.
				c2 := dialCoder(t, r.wsURL(r.token("bob", nil, time.Hour)))
				if err := c2.Write(t.Context(), websocket.MessageText, []byte("still here")); err != nil {
					t.Fatal(err)
				}
				if _, p, err := readCoder(t, c2); err != nil || string(p) != message.EchoPrefix+"still here" {
					t.Fatalf("second client: %q, %v", p, err)
				}
				if n := r.hooks.count(); n != 1 {
					t.Errorf("Hooks.Closed called %d times, want 1", n)
				}
			})
		}
	}
}

// frameScan follows frame boundaries however the stream is cut into reads.
func TestFrameScanFollowsFramesAcrossReads(t *testing.T) {
	var stream []byte
	frame := func(b0 byte, n int, masked bool) {
		h := rfc6455.AppendHeader(nil, b0, uint64(n), masked)
		if masked {
			h = append(h, 9, 9, 9, 9)
		}
		stream = append(stream, h...)
		// Payload bytes that look like headers announcing huge lengths: a scanner out of step
		// would trip on them.
		stream = append(stream, []byte(strings.Repeat("\xff", n))...)
	}
	frame(0x81, 0, true)
	frame(0x81, 125, true)
	frame(0x82, 126, true)
	frame(0x89, 5, true)
	frame(0x01, 70000, true)
	frame(0x80, 3, false)
	frame(0x82, 65535, true)
	const max = 1 << 20
	for _, chunk := range []int{1, 2, 3, 7, 13, 4096, len(stream)} {
		var f frameScan
		for i := 0; i < len(stream); i += chunk {
			if f.scan(stream[i:min(i+chunk, len(stream))], max) >= 0 {
				t.Fatalf("chunk %d: refused at %d", chunk, i)
			}
		}
		if f.state != scanFirst {
			t.Fatalf("chunk %d: ended in state %d, want at a frame boundary", chunk, f.state)
		}
		// Then a frame over the limit is refused, however it is cut.
		bad := hugeHeader(1 << 63)
		refused := false
		for i := 0; i < len(bad) && !refused; i += chunk {
			refused = f.scan(bad[i:min(i+chunk, len(bad))], max) >= 0
		}
		if !refused {
			t.Fatalf("chunk %d: a length of 2^63 passed", chunk)
		}
	}
	var f frameScan
	if f.scan(hugeHeader(max), max) >= 0 {
		t.Fatal("a frame of exactly the limit was refused")
	}
	f = frameScan{}
	if f.scan(hugeHeader(max+1), max) < 0 {
		t.Fatal("a frame one byte over the limit passed")
	}
	// The offset of the refused frame's header, for the bytes before it to reach gws.
	f = frameScan{}
	two := append([]byte{0x81, 0x80 | 2, 1, 2, 3, 4, 'h', 'i'}, hugeHeader(1<<63)...)
	if at := f.scan(two, max); at != 8 {
		t.Fatalf("refused at %d, want 8", at)
	}
	if allocs := testing.AllocsPerRun(100, func() { var f frameScan; f.scan(stream, max) }); allocs != 0 {
		t.Errorf("scan allocates %.0f times", allocs)
	}
}

// DESIGN.md "Subscribe before open": a message delivered as soon as the client's handshake
// has returned reaches it. The 101 is held until the connection is in its shard.
func TestMessageDeliveredRightAfterOpenArrives(t *testing.T) {
	const rounds = 200
	r := newRig(t, func(o *session.Options) { o.Shards = 2 })
	missed := 0
	for i := range rounds {
		user := fmt.Sprintf("u%d", i)
		c := dialRaw(t, r, r.token(user, nil, time.Hour), 0)
		payload := "first " + user
		r.deliver(registry.User, user, payload)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		op, p, err := c.readFrame()
		if err != nil || op != 0x1 || string(p) != payload {
			missed++
			t.Logf("round %d: got op %d %q, %v", i, op, p, err)
		}
		_ = c.Close()
	}
	if missed > 0 {
		t.Fatalf("%d of %d messages delivered right after open were lost", missed, rounds)
	}
}

// A rejected connection reads until the client's close frame, so the same header reaches gws
// there too, before any authentication. The panic happened on the HTTP handler's goroutine,
// where net/http recovered it and left the hijacked socket open for good; now the header is
// refused and the socket released.
func TestHugeFrameLengthOnRejectedConnectionReleasesTheSocket(t *testing.T) {
	r := newRig(t)
	c := dialRaw(t, r, "not-a-token", 0)
	if _, err := c.Write(hugeHeader(1 << 63)); err != nil {
		t.Fatal(err)
	}
	code, before := c.readUntilClose(t, 5*time.Second)
	if code != message.ClosePolicyViolation || len(before) != 1 || errorCode(t, before[0]) != message.CodeAuthFailed {
		t.Fatalf("close %d after %q, want AUTH_FAILED then 1008", code, before)
	}
	// Once the server has closed its socket, a write draws a reset and the next one fails.
	released := testenv.Until(5*time.Second, func() bool {
		_, err := c.Write([]byte{0})
		return err != nil
	})
	if !released {
		t.Error("the server never released the rejected socket")
	}
	c2 := dialCoder(t, r.wsURL(r.token("bob", nil, time.Hour)))
	if err := c2.Write(t.Context(), websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := readCoder(t, c2); err != nil || string(p) != message.EchoPrefix+"still here" {
		t.Fatalf("second client: %q, %v", p, err)
	}
}

// An upgrade gws refuses on an accepted request still gets its 400, which the held wire
// writes before it lets the socket go.
func TestFailedUpgradeStillAnswers400(t *testing.T) {
	r := newRig(t)
	// No key: gws answers 400.
	c, err := wsraw.Dial(r.srv.Listener.Addr().String(), "/ws?token="+r.token("alice", nil, time.Hour), wsraw.Options{NoKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp := c.Response
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %s, want 400", resp.Status)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("reading to the end of the connection: %v", err)
	}
}

// tcpPair is a connected loopback TCP pair.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// A held wire writes what it held, then what came while it flushed, in order, and its FIN
// only after all of it, whether gws's Close comes before open or after.
func TestHeldWireWritesInOrderAndHalfClosesLast(t *testing.T) {
	const records = 2000
	for _, openAfter := range []int{0, 1, 500, records} {
		t.Run(fmt.Sprint("openAfter=", openAfter), func(t *testing.T) {
			server, client := tcpPair(t)
			w := newWire(server, 1<<10, true, nil, nil)
			if _, err := w.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			var want strings.Builder
			want.WriteString("HTTP/1.1 101 Switching Protocols\r\n\r\n")
			for i := range records {
				fmt.Fprintf(&want, "%05d", i)
			}
			wrote := make(chan int, records+1)
			go func() {
				for i := range records {
					if _, err := w.Write(fmt.Appendf(nil, "%05d", i)); err != nil {
						t.Errorf("write %d: %v", i, err)
					}
					wrote <- i + 1
				}
				_ = w.Close() // as gws does after its close frame
				wrote <- records + 1
			}()
			if openAfter > 0 {
				for n := range wrote {
					if n >= openAfter {
						break
					}
				}
			}
			if err := w.open(); err != nil {
				t.Fatal(err)
			}
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(client) // to the FIN
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want.String() {
				t.Fatalf("read %d bytes, not the %d written in order", len(got), want.Len())
			}
		})
	}
}

// writeLog is a net.Conn that records each Write it is given.
type writeLog struct {
	net.Conn
	writes [][]byte
}

func (l *writeLog) Write(p []byte) (int, error) {
	l.writes = append(l.writes, append([]byte(nil), p...))
	return len(p), nil
}

// The engine's reply to a close goes out in the very write of the close frame, so that no
// frame gws still has queued can come between them (a slow consumer's SLOW_CONSUMER must be
// the last frame before its close); frames written before the close do not carry it.
func TestReplyGoesInTheSameWriteAsTheCloseFrame(t *testing.T) {
	log := &writeLog{}
	w := newWire(log, 1<<10, false, nil, nil)
	reply := rfc6455.EncodeFrame(rfc6455.OpText, message.ErrorJSON(message.CodeSlowConsumer))
	w.beforeClose.Store(&reply)
	data := rfc6455.EncodeFrame(rfc6455.OpText, []byte(`{"seq":1}`))
	closeFrame := rfc6455.EncodeFrame(rfc6455.OpClose, []byte{0x03, 0xf5}) // 1013
	for _, p := range [][]byte{data, closeFrame} {
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
	}
	want := []string{string(data), string(reply) + string(closeFrame)}
	if len(log.writes) != len(want) {
		t.Fatalf("%d writes, want %d: %q", len(log.writes), len(want), log.writes)
	}
	for i := range want {
		if string(log.writes[i]) != want[i] {
			t.Fatalf("write %d is %q, want %q", i, log.writes[i], want[i])
		}
	}
	if w.beforeClose.Load() != nil {
		t.Fatal("the reply is still pending after the close frame carried it")
	}
}
