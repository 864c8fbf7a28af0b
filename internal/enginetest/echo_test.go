package enginetest_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/message"
)

// Text comes back with the echo prefix, binary as it was, at every frame-length boundary
// (7-bit, 16-bit and 64-bit lengths), and each message is counted received.
func TestEchoTextAndBinaryAtFrameSizeBoundaries(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		c := servicetest.Dial(t, r.UserURL("echo"))
		texts := []string{"X", "ünïcødé ✓", `{"type":"ping"}`}
		for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
			texts = append(texts, strings.Repeat("t", n))
		}
		for _, text := range texts {
			c.Send(t, text)
			if m := c.Next(t, enginetest.Wait); m.Binary || m.Data != message.EchoPrefix+text {
				t.Fatalf("text of %d bytes: got binary=%v, %d bytes", len(text), m.Binary, len(m.Data))
			}
		}
		bins := 0
		for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
			bin := bytes.Repeat([]byte{0xFF, 0x00}, n/2)
			if n%2 == 1 {
				bin = append(bin, 0x80)
			}
			if err := c.Conn.WriteMessage(gws.OpcodeBinary, bin); err != nil {
				t.Fatal(err)
			}
			if m := c.Next(t, enginetest.Wait); !m.Binary || m.Data != string(bin) {
				t.Fatalf("binary of %d bytes: got binary=%v, %d bytes", n, m.Binary, len(m.Data))
			}
			bins++
		}
		if got, want := r.Metrics.MessagesReceived.Get(), uint64(len(texts)+bins); got != want {
			t.Fatalf("websocket_messages_received_total = %d, want %d", got, want)
		}
	})
}

// An independent client library gets the same echo, and its normal close is reported 1000.
func TestEchoToAnIndependentClientAndItsCloseIs1000(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		ctx, cancel := context.WithTimeout(t.Context(), enginetest.Wait)
		defer cancel()
		c, _, err := websocket.Dial(ctx, r.UserURL("coder"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for _, text := range []string{"hi", strings.Repeat("x", 65536), strings.Repeat("long ", 5000)} {
			if err := c.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageText || string(got) != message.EchoPrefix+text {
				t.Fatalf("read %v, %d bytes, err %v", typ, len(got), err)
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
		if code := r.Hooks.WaitUser(t, "coder", enginetest.Wait); code != message.CloseNormal {
			t.Fatalf("Hooks.Closed code %d, want 1000", code)
		}
	})
}

// A ping is answered with a pong carrying its payload, also the largest control payload sent
// between the fragments of a text message, which is then echoed whole.
func TestPingIsAnsweredWithItsPayloadEvenBetweenFragments(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		c := r.DialRaw(t, "pinger")
		c.Send(enginetest.Msg(enginetest.OpPing, "are you there? 123"))
		if f := c.Next(enginetest.Wait); f.Op != enginetest.OpPong || string(f.Payload) != "are you there? 123" {
			t.Fatalf("got opcode %#x %q, want the pong", f.Op, f.Payload)
		}
		ping := bytes.Repeat([]byte{'p'}, 125)
		c.Send(
			enginetest.Frame(false, 0, enginetest.OpText, []byte("hello, "), true),
			enginetest.Frame(true, 0, enginetest.OpPing, ping, true),
			enginetest.Frame(true, 0, enginetest.OpContinuation, []byte("world"), true),
		)
		if f := c.Next(enginetest.Wait); f.Op != enginetest.OpPong || !bytes.Equal(f.Payload, ping) {
			t.Fatalf("got opcode %#x %q, want the pong", f.Op, f.Payload)
		}
		if f := c.Next(enginetest.Wait); f.Op != enginetest.OpText || string(f.Payload) != "Echo: hello, world" {
			t.Fatalf("got opcode %#x %q, want the whole echo", f.Op, f.Payload)
		}
	})
}
