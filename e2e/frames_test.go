package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// docs/PROTOCOL.md ("Connecting", "Protocol notifications.v1"): client → server messages and
// close codes.

func TestTextIsEchoedWithPrefix(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		for _, text := range []string{"X", "hello world", "ünïcødé ✓", `{"type":"ping"}`} {
			c.Send(t, text)
			expectText(t, c, "Echo: "+text)
		}
	})
}

func TestTextIsEchoedToAnIndependentClient(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		conn, _ := coderDial(t, n.DialURL(n.Token(t, "u1")), nil)
		coderEcho(t, conn, "X")
		coderEcho(t, conn, strings.Repeat("long ", 5000))
	})
}

func TestBinaryIsEchoedAsBinary(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		payload := []byte{0x00, 0xff, 0x80, 'a', 0x01}
		if err := c.Conn.WriteMessage(gws.OpcodeBinary, payload); err != nil {
			t.Fatal(err)
		}
		m := c.Next(t, wait)
		if !m.Binary || m.Data != string(payload) {
			t.Fatalf("got %q (binary %v), want binary %q", m.Data, m.Binary, payload)
		}
	})
}

func TestClientPingIsAnsweredWithPongCarryingTheSamePayload(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		payload := []byte("are you there? 123")
		c.writeFrame(t, opPing, payload, true)
		deadline := time.Now().Add(wait)
		for {
			f, err := c.readFrame(deadline)
			if err != nil {
				t.Fatalf("no pong: %v", err)
			}
			if f.Op == opPing { // a server heartbeat; not what we wait for
				continue
			}
			if f.Op != opPong || !bytes.Equal(f.Payload, payload) {
				t.Fatalf("got opcode %#x payload %q, want a pong with %q", f.Op, f.Payload, payload)
			}
			return
		}
	})
}

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

func TestNormalCloseFromAnIndependentClientIsRecordedAs1000(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		conn, _ := coderDial(t, n.DialURL(n.Token(t, "u1")), nil)
		waitActive(t, n.Service, 1)
		if err := conn.Close(1000, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1000"}`, 1, wait)
	})
}

var heartbeatEnv = map[string]string{"WEBSOCKET_HEARTBEAT_INTERVAL": "0.2", "WEBSOCKET_CONNECTION_TIMEOUT": "0.6"}

func TestServerPingsAtTheHeartbeatInterval(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, heartbeatEnv)
		c := dial(t, n.Service, "u1")
		start := time.Now()
		for i := 0; i < 3; i++ {
			c.Ping(t, 2*time.Second)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("3 pings took %v at a 0.2 s heartbeat", d)
		}
	})
}

func TestClientAnsweringPingsOutlivesTheConnectionTimeout(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, heartbeatEnv)
		c := dial(t, n.Service, "u1") // answers pings, sends nothing else
		time.Sleep(2 * time.Second)
		stillOpen(t, c)
	})
}

func TestSilentClientIsClosedWith1001AfterTheConnectionTimeout(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, heartbeatEnv)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		start := time.Now()
		frames, err := c.readUntilClose(wait)
		if code := lastClose(frames); code != 1001 {
			t.Fatalf("frames %v (%v), want pings then close 1001", opcodes(frames), err)
		}
		if d := time.Since(start); d < 400*time.Millisecond || d > 3*time.Second {
			t.Fatalf("closed after %v with a 0.6 s timeout", d)
		}
		pings := 0
		for _, f := range frames {
			if f.Op == opPing {
				pings++
			}
		}
		if pings == 0 {
			t.Fatal("no server ping before the timeout")
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1001"}`, 1, wait)
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

func TestMessageOverMaxMessageSizeClosesWith1009(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"MAX_MESSAGE_SIZE": "1024"})
		c := dial(t, n.Service, "u1")
		c.Send(t, strings.Repeat("a", 1024)) // at the limit: fine
		expectText(t, c, "Echo: "+strings.Repeat("a", 1024))
		c.Send(t, strings.Repeat("b", 1025))
		expectRefusal(t, c, "MESSAGE_TOO_LARGE", 1009)
		n.WaitMetric(t, `websocket_disconnects_total{code="1009"}`, 1, wait)
	})
}

func TestFragmentedMessageOverMaxMessageSizeClosesWith1009(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"MAX_MESSAGE_SIZE": "1024"})
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		// Three 600-byte fragments: each under the limit, the message over it.
		c.writeFragment(t, false, opText, bytes.Repeat([]byte("a"), 600))
		c.writeFragment(t, false, 0, bytes.Repeat([]byte("a"), 600))
		c.writeFragment(t, true, 0, bytes.Repeat([]byte("a"), 600))
		frames, err := c.readUntilClose(wait)
		if code := lastClose(frames); code != 1009 {
			t.Fatalf("frames %v (%v), want close 1009", opcodes(frames), err)
		}
	})
}

func TestUnmaskedClientFrameClosesWith1002(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		c.writeFrame(t, opText, []byte("unmasked"), false)
		frames, err := c.readUntilClose(wait)
		if code := lastClose(frames); code != 1002 {
			t.Fatalf("frames %v (%v), want close 1002", opcodes(frames), err)
		}
		for _, f := range frames {
			if f.Op == opText && strings.HasPrefix(string(f.Payload), "Echo:") {
				t.Fatalf("the unmasked frame was echoed: %q", f.Payload)
			}
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1002"}`, 1, wait)
	})
}

// slowConsumerEnv: a reading client never has more than one batch (128 KiB) queued; a client
// that never reads passes the limit once the kernel buffers (at most ~4 MiB of socket send
// buffer here) are full.
var slowConsumerEnv = map[string]string{"SEND_QUEUE_LIMIT": "524288"}

const (
	slowBatches   = 64 // of 16 messages of 8 KiB: 8 MiB in all
	slowBatchSize = 16
)

func TestSlowConsumerIsClosedWith1013WhileOthersReceiveEverythingInOrder(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, slowConsumerEnv)
		// Handshakes, then never reads: its small receive window fills and the server's
		// queue for it grows past SEND_QUEUE_LIMIT.
		slow := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "slow", "class7"), rawOptions{ReceiveBuf: 4096})
		good := dial(t, n.Service, "good", "class7")
		waitActive(t, n.Service, 2)

		pad := strings.Repeat("x", 8<<10)
		seq := 0
		for b := 0; b < slowBatches; b++ {
			for i := 0; i < slowBatchSize; i++ {
				n.Publish(t, group("class7"), fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq+i, pad))
			}
			for i := 0; i < slowBatchSize; i++ {
				want := fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq+i, pad)
				if got := good.NextText(t, wait); got != want {
					t.Fatalf("good client: message %d is %.40q…, want seq %d", seq+i, got, seq+i)
				}
			}
			seq += slowBatchSize
		}
		stillOpen(t, good)
		n.WaitMetric(t, `websocket_disconnects_total{code="1013"}`, 1, wait)
		if got := n.Metric(t, `websocket_messages_dropped_total{reason="slow_consumer"}`); got < 1 {
			t.Fatalf(`websocket_messages_dropped_total{reason="slow_consumer"} = %v, want > 0`, got)
		}
		// The slow client, reading at last, finds its connection ended.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := drainUntilEOF(ctx, slow); err != nil {
			t.Fatalf("slow connection not ended by the server: %v", err)
		}
	})
}

func TestSlowConsumerDoesNotHoldUpDeliveryToAnIndependentClient(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, slowConsumerEnv)
		rawDial(t, n.Addr, "/ws?token="+n.Token(t, "slow"), rawOptions{ReceiveBuf: 4096})
		conn, _ := coderDial(t, n.DialURL(n.Token(t, "fast")), nil)
		waitActive(t, n.Service, 2)
		pad := strings.Repeat("y", 8<<10)
		seq := 0
		for b := 0; b < slowBatches; b++ {
			for i := 0; i < slowBatchSize; i++ {
				n.Publish(t, everyone, fmt.Sprintf("%d %s", seq+i, pad))
			}
			for i := 0; i < slowBatchSize; i++ {
				if got := coderRead(t, conn); !strings.HasPrefix(got, fmt.Sprintf("%d ", seq+i)) {
					t.Fatalf("message %d is %.40q…", seq+i, got)
				}
			}
			seq += slowBatchSize
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1013"}`, 1, wait)
	})
}

// docs/PROTOCOL.md "Close codes": 1013 is how a client learns it was too slow. Once it reads
// again it must find whole frames (never a frame cut in the middle), then the SLOW_CONSUMER
// ErrorMessage and the close frame with 1013: a browser tab that was frozen and resumes can
// tell why it was dropped.
func TestSlowConsumerReadingAtLastSeesSlowConsumerThenClose1013(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, slowConsumerEnv)
		// Default socket buffers: once it reads, it reads at loopback speed.
		slow := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "slow"), rawOptions{})
		waitActive(t, n.Service, 1)
		// Publish until the server gives up on the connection that reads nothing (its socket
		// buffers, ~4 MiB here, and its 512 KiB queue are full: it drops what is queued), then
		// read at once. A delivery reaches the connection some time after Publish returns (the
		// engine queues it), so a fixed amount published says nothing about what the connection
		// has been handed when the client starts to read; and the server gives the closing
		// handshake a second before it closes the socket (the disconnect is counted then on
		// gws), so the client must resume promptly once the server has given up.
		pad := strings.Repeat("z", 8<<10)
		for i := 0; n.Metric(t, `websocket_messages_dropped_total{reason="slow_consumer"}`) < 1; i++ {
			if i == 4*slowBatches*slowBatchSize {
				t.Fatalf("%d messages of 8 KiB published, the connection that reads nothing is still open", i)
			}
			n.Publish(t, everyone, fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, i, pad))
		}
		frames, err := slow.readUntilClose(wait)
		n.WaitMetric(t, `websocket_disconnects_total{code="1013"}`, 1, wait)
		if err != nil {
			t.Fatalf("after %d whole frames the stream ended with %v: the server cut a frame or closed "+
				"without the SLOW_CONSUMER ErrorMessage and close 1013 (last frames %s)", len(frames), err, lastOps(frames))
		}
		if code := lastClose(frames); code != 1013 {
			t.Fatalf("closed with %d, want 1013 (last frames %s)", code, lastOps(frames))
		}
		// The ErrorMessage comes before the close frame; frames already on their way may
		// still arrive between the two.
		for i := len(frames) - 2; i >= 0; i-- {
			if f := frames[i]; f.Op == opText && strings.Contains(string(f.Payload), `"SLOW_CONSUMER"`) {
				checkErrorMessage(t, string(f.Payload), "SLOW_CONSUMER")
				if trailing := len(frames) - 2 - i; trailing > 0 {
					t.Logf("%d frames arrived between the ErrorMessage and the close frame", trailing)
				}
				return
			}
		}
		t.Fatalf("no SLOW_CONSUMER ErrorMessage before the close frame (last frames %s)", lastOps(frames))
	})
}

// lastOps describes the last three frames.
func lastOps(frames []frame) string {
	if len(frames) > 3 {
		frames = frames[len(frames)-3:]
	}
	return opcodes(frames)
}

// drainUntilEOF reads and discards until the server ends the connection or ctx is done.
func drainUntilEOF(ctx context.Context, c *rawConn) error {
	deadline, _ := ctx.Deadline()
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.br.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
			return nil
		}
	}
}

func TestInvalidUTF8TextClosesWith1007(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		c.writeFrame(t, opText, []byte{'o', 'k', 0xff, 0xfe}, true)
		frames, err := c.readUntilClose(wait)
		if code := lastClose(frames); code != 1007 {
			t.Fatalf("frames %v (%v), want close 1007", opcodes(frames), err)
		}
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

func TestClientCloseCodeIsRecorded(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		waitActive(t, n.Service, 1)
		if err := c.Conn.WriteClose(1001, []byte("tab closed")); err != nil {
			t.Fatal(err)
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1001"}`, 1, wait)
	})
}

// DESIGN "Close paths": after its close frame the server waits briefly for the client's, then
// ends the TCP connection, so no descriptor is left behind either way.
func TestServerEndsTCPAfterTheClosingHandshake(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		for _, answer := range []bool{true, false} {
			c := rawDial(t, n.Addr, "/ws?token=bad", rawOptions{})
			frames, err := c.readUntilClose(wait)
			if lastClose(frames) != 1008 {
				t.Fatalf("frames %s (%v), want close 1008", opcodes(frames), err)
			}
			start := time.Now()
			if answer {
				c.writeFrame(t, opClose, []byte{0x03, 0xf0}, true) // echo 1008
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			err = drainUntilEOF(ctx, c)
			cancel()
			if err != nil {
				t.Fatalf("client answered %v: TCP not ended by the server: %v", answer, err)
			}
			if d := time.Since(start); answer && d > time.Second {
				t.Fatalf("TCP ended %v after the client's close frame", d)
			}
		}
	})
}

func TestFragmentedTextWithAnInterleavedPingIsEchoedWhole(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		ping := bytes.Repeat([]byte{'p'}, 125) // the largest control payload
		c.writeFragment(t, false, opText, []byte("hello, "))
		c.writeFrame(t, opPing, ping, true)
		c.writeFragment(t, true, 0, []byte("world"))
		var pong, echo bool
		deadline := time.Now().Add(wait)
		for !pong || !echo {
			f, err := c.readFrame(deadline)
			if err != nil {
				t.Fatalf("pong %v echo %v: %v", pong, echo, err)
			}
			switch f.Op {
			case opPong:
				if !bytes.Equal(f.Payload, ping) {
					t.Fatalf("pong payload %q", f.Payload)
				}
				pong = true
			case opText:
				if string(f.Payload) != "Echo: hello, world" {
					t.Fatalf("echo %q", f.Payload)
				}
				echo = true
			case opPing:
			default:
				t.Fatalf("unexpected frame %s", opcodes([]frame{f}))
			}
		}
	})
}

func TestManySilentClientsAreAllClosedWith1001(t *testing.T) {
	const conns = 100
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, heartbeatEnv)
		clients := make([]*rawConn, conns)
		for i := range clients {
			clients[i] = rawDial(t, n.Addr, "/ws?token="+n.Token(t, fmt.Sprintf("u%d", i)), rawOptions{})
		}
		n.WaitMetric(t, `websocket_disconnects_total{code="1001"}`, conns, wait)
		for i, c := range clients {
			frames, err := c.readUntilClose(wait)
			if code := lastClose(frames); code != 1001 {
				t.Fatalf("client %d: frames %s (%v), want close 1001", i, lastOps(frames), err)
			}
		}
		n.WaitMetric(t, "websocket_connections_active", 0, wait)
	})
}
