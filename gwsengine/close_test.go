package gwsengine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

func withMaxMessage(n int) rigOption { return func(o *session.Options) { o.MaxMessageSize = n } }

func withHeartbeat(interval, timeout time.Duration) rigOption {
	return func(o *session.Options) { o.HeartbeatInterval, o.ConnectionTimeout = interval, timeout }
}

func TestOversizedMessageGetsErrorMessageThen1009(t *testing.T) {
	r := newRig(t, withMaxMessage(1024))
	c := dialCoder(t, r.wsURL(r.token("alice", nil, time.Hour)))
	if err := c.Write(t.Context(), websocket.MessageText, []byte(strings.Repeat("x", 1024))); err != nil {
		t.Fatal(err)
	}
	if _, p, err := readCoder(t, c); err != nil || len(p) != len(message.EchoPrefix)+1024 {
		t.Fatalf("a message of exactly the limit: %d bytes, %v", len(p), err)
	}
	_ = c.Write(t.Context(), websocket.MessageText, []byte(strings.Repeat("x", 1025)))
	expectErrorThenClose(t, c, message.CodeMessageTooLarge, message.CloseMessageTooBig)
	if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.CloseMessageTooBig {
		t.Errorf("Hooks.Closed code %d, want 1009", cl.code)
	}
}

func TestOversizedFragmentedMessageCloses1009(t *testing.T) {
	r := newRig(t, withMaxMessage(1024))
	c := dialRaw(t, r, r.token("alice", nil, time.Hour), 0)
	c.send(t, 0x01, make([]byte, 600)) // text, not final
	c.send(t, 0x00, make([]byte, 600)) // continuation, not final: 1200 bytes so far
	code, before := c.readUntilClose(t, 3*time.Second)
	if code != message.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	if len(before) != 1 || errorCode(t, before[0]) != message.CodeMessageTooLarge {
		t.Errorf("frames before the close: %q", before)
	}
}

func TestInvalidUTF8Closes1007(t *testing.T) {
	r := newRig(t)
	c := dialRaw(t, r, r.token("alice", nil, time.Hour), 0)
	c.send(t, 0x81, []byte{0xff, 0xfe, 0xfd})
	if code, _ := c.readUntilClose(t, 3*time.Second); code != message.CloseInvalidPayload {
		t.Fatalf("close code %d, want 1007", code)
	}
	if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.CloseInvalidPayload {
		t.Errorf("Hooks.Closed code %d, want 1007", cl.code)
	}
}

func TestProtocolErrorCloses1002(t *testing.T) {
	for name, b0 := range map[string]byte{"reserved opcode": 0x83, "reserved bit": 0x81 | 0x40} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			c := dialRaw(t, r, r.token("alice", nil, time.Hour), 0)
			c.send(t, b0, []byte("x"))
			if code, _ := c.readUntilClose(t, 3*time.Second); code != message.CloseProtocolError {
				t.Fatalf("close code %d, want 1002", code)
			}
			if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.CloseProtocolError {
				t.Errorf("Hooks.Closed code %d, want 1002", cl.code)
			}
		})
	}
}

func TestPeerCloseAndVanishReported(t *testing.T) {
	r := newRig(t)
	c := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	_ = c.socket.WriteClose(1000, nil)
	if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.CloseNormal {
		t.Errorf("peer close: Hooks.Closed code %d, want 1000", cl.code)
	}
	raw := dialRaw(t, r, r.token("bob", nil, time.Hour), 0)
	r.waitConns(1)
	_ = raw.Close()
	if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.CloseAbnormal || cl.user != "bob" {
		t.Errorf("vanished peer: Hooks.Closed %+v, want bob 1006", cl)
	}
	if n := r.metrics.ConnectionsActive.Get(); n != 0 {
		t.Errorf("active connections %v", n)
	}
}

func TestHeartbeatPingsAndSilenceCloses1001(t *testing.T) {
	r := newRig(t, withHeartbeat(200*time.Millisecond, 600*time.Millisecond))
	live := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil) // answers pings
	silent := dialRaw(t, r, r.token("bob", nil, time.Hour), 0)         // never answers
	start := time.Now()

	select {
	case <-live.pings:
	case <-time.After(time.Second):
		t.Fatal("no server ping within 1s at a 200ms interval")
	}
	code, _ := silent.readUntilClose(t, 3*time.Second)
	if code != message.CloseGoingAway {
		t.Fatalf("silent client closed %d, want 1001", code)
	}
	if d := time.Since(start); d < 550*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("silent client closed after %v, want about 600ms", d)
	}
	if cl := r.hooks.wait(t, 3*time.Second); cl.user != "bob" || cl.code != message.CloseGoingAway {
		t.Errorf("Hooks.Closed %+v, want bob 1001", cl)
	}
	// Pongs are inbound frames: the answering client outlives several timeouts.
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-live.done:
		t.Fatalf("a client answering pings was closed (%d)", live.code)
	default:
	}
}

func TestExpiredTokenClosesWith1008(t *testing.T) {
	r := newRig(t)
	// exp has one-second resolution, so a 1s token expires within the next second.
	c := dialCoder(t, r.wsURL(r.token("alice", nil, time.Second)))
	expectErrorThenClose(t, c, message.CodeTokenExpired, message.ClosePolicyViolation)
	if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.ClosePolicyViolation {
		t.Errorf("Hooks.Closed code %d, want 1008", cl.code)
	}
}

func TestAuthRefreshExtendsLife(t *testing.T) {
	r := newRig(t)
	c := dialGWS(t, r.wsURL(r.token("alice", nil, 2*time.Second)), nil)
	fresh := r.token("alice", nil, time.Hour)
	_ = c.socket.WriteString(fmt.Sprintf(`{"type":"auth","token":%q}`, fresh))
	f := c.next(t)
	var ok struct {
		Type string
		Exp  int64
	}
	if err := json.Unmarshal(f.data, &ok); err != nil || ok.Type != message.TypeAuthOK || ok.Exp < time.Now().Add(50*time.Minute).Unix() {
		t.Fatalf("refresh answer %q", f.data)
	}
	time.Sleep(3 * time.Second) // past the first token's exp
	_ = c.socket.WriteString("still here")
	if f := c.next(t); string(f.data) != "Echo: still here" {
		t.Fatalf("after the old exp: %q", f.data)
	}
}

func TestBadAuthRefreshCloses1008(t *testing.T) {
	r := newRig(t)
	for name, token := range map[string]string{
		"garbage":       "garbage",
		"other subject": r.token("mallory", nil, time.Hour),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
			_ = c.socket.WriteString(fmt.Sprintf(`{"type":"auth","token":%q}`, token))
			if code := errorCode(t, c.next(t).data); code != message.CodeAuthFailed {
				t.Errorf("error code %s", code)
			}
			if code := c.waitClosed(t, 3*time.Second); code != message.ClosePolicyViolation {
				t.Errorf("close code %d, want 1008", code)
			}
			if cl := r.hooks.wait(t, 3*time.Second); cl.code != message.ClosePolicyViolation {
				t.Errorf("Hooks.Closed code %d", cl.code)
			}
		})
	}
}

func TestDrainSpreadsClosesOverTheWindow(t *testing.T) {
	r := newRig(t)
	const n = 10
	clients := make([]*gwsClient, n)
	for i := range clients {
		clients[i] = dialGWS(t, r.wsURL(r.token(fmt.Sprintf("u%d", i), nil, time.Hour)), nil)
	}
	r.waitConns(n)
	window := time.Second
	start := time.Now()
	if err := r.eng.Drain(t.Context(), window); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	var first, last time.Time
	for i := 0; i < n; i++ {
		cl := r.hooks.wait(t, time.Second)
		if cl.code != message.CloseGoingAway {
			t.Errorf("%s closed %d, want 1001", cl.user, cl.code)
		}
		if first.IsZero() {
			first = cl.at
		}
		last = cl.at
	}
	for _, c := range clients {
		if code := c.waitClosed(t, time.Second); code != message.CloseGoingAway {
			t.Errorf("client saw %d, want 1001", code)
		}
	}
	// Connection i closes at i*window/n: the last at 0.9s.
	if spread := last.Sub(first); spread < 800*time.Millisecond || took > window+500*time.Millisecond {
		t.Errorf("closes spread over %v, drain took %v; want about %v", spread, took, window*(n-1)/n)
	}
	if r.hooks.count() != n {
		t.Errorf("Hooks.Closed %d times", r.hooks.count())
	}
}

func TestSlowConsumerClosed1013OthersUnaffected(t *testing.T) {
	r := newRig(t, func(o *session.Options) { o.SendQueueLimit = 256 << 10 })
	dialRaw(t, r, r.token("slow", []string{"room"}, time.Hour), 4096) // never reads
	fast := dialGWS(t, r.wsURL(r.token("fast", []string{"room"}, time.Hour)), nil)
	r.waitConns(2)

	// 8 MiB: more than the socket buffers hold. The reading client never has more than window
	// messages (128 KiB) in flight, so it keeps up however slowly this machine runs gws's
	// writer and the client's reader: only the client that never reads may pass the limit.
	const total, size, window = 1000, 8 << 10, 16
	payload := strings.Repeat("n", size)
	received := 0
	receive := func() {
		if f := fast.next(t); len(f.data) != size {
			t.Fatalf("message %d: %d bytes", received, len(f.data))
		}
		received++
	}
	start := time.Now()
	for i := 0; i < total; i++ {
		if i >= window {
			receive()
		}
		r.deliver(registry.Group, "room", payload)
	}
	for received < total {
		receive()
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the reading client took %v for its messages", d)
	}
	cl := r.hooks.wait(t, 5*time.Second)
	if cl.user != "slow" || cl.code != message.CloseTryAgainLater {
		t.Fatalf("Hooks.Closed %+v, want slow 1013", cl)
	}
	if got := droppedCount(r.metrics, telemetry.DropSlowConsumer); got != 1 {
		t.Errorf("dropped{slow_consumer} = %d, want 1", got)
	}
	select {
	case <-fast.done:
		t.Fatalf("the reading client was closed (%d)", fast.code)
	default:
	}
}

func droppedCount(m *telemetry.Metrics, reason string) int {
	var b strings.Builder
	m.WritePrometheus(&b)
	prefix := fmt.Sprintf(`websocket_messages_dropped_total{reason=%q} `, reason)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n int
			_, _ = fmt.Sscan(v, &n)
			return n
		}
	}
	return -1
}

// A client that stopped reading long enough to be dropped, and then reads again, finds the
// SLOW_CONSUMER ErrorMessage and the 1013 close frame after the frames that were already on
// their way.
func TestSlowConsumerWhoReadsLateSeesWhy(t *testing.T) {
	r := newRig(t, func(o *session.Options) { o.SendQueueLimit = 256 << 10 })
	slow := dialRaw(t, r, r.token("slow", nil, time.Hour), 4096)
	r.waitConns(1)
	payload := strings.Repeat("n", 8<<10)
	deadline := time.Now().Add(5 * time.Second)
	for droppedCount(r.metrics, telemetry.DropSlowConsumer) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never dropped")
		}
		r.deliver(registry.User, "slow", payload)
	}
	code, before := slow.readUntilClose(t, 5*time.Second)
	if code != message.CloseTryAgainLater {
		t.Fatalf("close code %d, want 1013", code)
	}
	if len(before) == 0 || errorCode(t, before[len(before)-1]) != message.CodeSlowConsumer {
		t.Errorf("last frame before the close is not SLOW_CONSUMER")
	}
}
