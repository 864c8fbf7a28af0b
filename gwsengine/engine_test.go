package gwsengine

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lxzan/gws"
	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

// The server consumes the engine through this interface; package server does not import
// this one, so the check costs no cycle.
var _ server.Engine = (*Engine)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEchoTextAndBinary(t *testing.T) {
	r := newRig(t)
	c := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	_ = c.socket.WriteString("hello")
	if f := c.next(t); f.op != gws.OpcodeText || string(f.data) != "Echo: hello" {
		t.Fatalf("text echo = %d %q", f.op, f.data)
	}
	bin := []byte{0, 1, 2, 0xff}
	_ = c.socket.WriteMessage(gws.OpcodeBinary, bin)
	if f := c.next(t); f.op != gws.OpcodeBinary || !bytes.Equal(f.data, bin) {
		t.Fatalf("binary echo = %d %v", f.op, f.data)
	}

	cc := dialCoder(t, r.wsURL(r.token("bob", nil, time.Hour)))
	if err := cc.Write(t.Context(), websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if typ, p, err := readCoder(t, cc); err != nil || typ != websocket.MessageText || string(p) != "Echo: hi" {
		t.Fatalf("coder echo = %v %q %v", typ, p, err)
	}
	if got := r.metrics.MessagesReceived.Get(); got != 3 {
		t.Errorf("messages received = %d, want 3", got)
	}
}

func TestPingAnsweredWithSamePayload(t *testing.T) {
	r := newRig(t)
	c := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	_ = c.socket.WritePing([]byte("are you there"))
	select {
	case p := <-c.pongs:
		if string(p) != "are you there" {
			t.Fatalf("pong payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

func TestSubprotocolSelectedOnlyWhenOffered(t *testing.T) {
	r := newRig(t)
	tok := r.token("alice", nil, time.Hour)
	withProto := dialCoder(t, r.url, session.Subprotocol, session.BearerPrefix+tok)
	if got := withProto.Subprotocol(); got != session.Subprotocol {
		t.Errorf("selected %q, want %q", got, session.Subprotocol)
	}
	plain := dialCoder(t, r.wsURL(tok))
	if got := plain.Subprotocol(); got != "" {
		t.Errorf("selected %q for a client that offered none", got)
	}
	if err := plain.Write(t.Context(), websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := readCoder(t, plain); err != nil || string(p) != "Echo: x" {
		t.Fatalf("echo = %q %v", p, err)
	}
}

func TestRejectSendsErrorMessageThen1008(t *testing.T) {
	r := newRig(t)
	for name, url := range map[string]string{
		"bad token":     r.wsURL("not-a-jwt"),
		"expired token": r.wsURL(r.token("alice", nil, -time.Minute)),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialCoder(t, url, session.Subprotocol)
			if got := c.Subprotocol(); got != session.Subprotocol {
				t.Errorf("subprotocol %q", got)
			}
			want := message.CodeAuthFailed
			if name == "expired token" {
				want = message.CodeTokenExpired
			}
			expectErrorThenClose(t, c, want, message.ClosePolicyViolation)
		})
	}
	if n := r.hooks.count(); n != 0 {
		t.Errorf("Hooks.Closed called %d times for rejected connections", n)
	}
	if n := r.metrics.ConnectionsActive.Get(); n != 0 {
		t.Errorf("active connections %v after rejections", n)
	}
}

func TestDeliverReachesEveryConnectionOfTheUserOnly(t *testing.T) {
	r := newRig(t)
	a1 := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	a2 := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	b := dialGWS(t, r.wsURL(r.token("bob", nil, time.Hour)), nil)
	r.waitConns(3)

	r.deliver(registry.User, "alice", `{"type":"notification","n":1}`)
	r.deliver(registry.User, "bob", `{"type":"notification","n":2}`)
	for _, c := range []*gwsClient{a1, a2} {
		if f := c.next(t); string(f.data) != `{"type":"notification","n":1}` || f.op != gws.OpcodeText {
			t.Errorf("alice got %d %q", f.op, f.data)
		}
	}
	// Per-connection order follows delivery order, so bob's first message tells whether he
	// got alice's.
	if f := b.next(t); string(f.data) != `{"type":"notification","n":2}` {
		t.Errorf("bob got %q first", f.data)
	}
}

func TestDeliverToGroupAndBroadcast(t *testing.T) {
	r := newRig(t)
	t1 := dialGWS(t, r.wsURL(r.token("teacher", []string{"class-a", "staff"}, time.Hour)), nil)
	s1 := dialGWS(t, r.wsURL(r.token("s1", []string{"class-a"}, time.Hour)), nil)
	s2 := dialGWS(t, r.wsURL(r.token("s2", []string{"class-b"}, time.Hour)), nil)
	r.waitConns(3)

	r.eng.Deliver([]registry.Delivery{
		{Target: registry.Target{Kind: registry.Group, ID: "class-a"}, Payload: []byte(`"a"`)},
		{Target: registry.Target{Kind: registry.Broadcast}, Payload: []byte(`"all"`)},
	})
	for name, c := range map[string]*gwsClient{"teacher": t1, "s1": s1} {
		if f := c.next(t); string(f.data) != `"a"` {
			t.Errorf("%s got %q, want group message", name, f.data)
		}
		if f := c.next(t); string(f.data) != `"all"` {
			t.Errorf("%s got %q, want broadcast", name, f.data)
		}
	}
	if f := s2.next(t); string(f.data) != `"all"` {
		t.Errorf("s2 got %q, want only the broadcast", f.data)
	}
	waitSent(t, r, 5) // counted once written, which may be just after the client has it
	if got := r.metrics.MessagesSent.Get(); got != 5 {
		t.Errorf("messages sent = %d, want 5", got)
	}
}

func TestAcceptAfterCloseRefused(t *testing.T) {
	r := newRig(t)
	_ = r.eng.Close()
	req := httptest.NewRequest(http.MethodGet, "/ws", nil)
	w := httptest.NewRecorder()
	if err := r.eng.Accept(w, req, session.Admission{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close = %v, want ErrClosed", err)
	}
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", w.Code)
	}
}

func TestCloseEndsRemainingConnectionsWith1001(t *testing.T) {
	r := newRig(t)
	a := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	b := dialCoder(t, r.wsURL(r.token("bob", nil, time.Hour)))
	r.waitConns(2)
	if err := r.eng.Close(); err != nil {
		t.Fatal(err)
	}
	if code := a.waitClosed(t, 3*time.Second); code != message.CloseGoingAway {
		t.Errorf("gws client saw %d, want 1001", code)
	}
	if _, _, err := readCoder(t, b); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("coder client saw %v, want 1001", err)
	}
	for range 2 {
		if cl := r.hooks.wait(t, time.Second); cl.code != message.CloseGoingAway {
			t.Errorf("Hooks.Closed %+v, want 1001", cl)
		}
	}
}

func TestConnectionsSpreadOverShardsAndGauged(t *testing.T) {
	r := newRig(t) // 4 shards
	for i := range 8 {
		dialGWS(t, r.wsURL(r.token(fmt.Sprintf("u%d", i), nil, time.Hour)), nil)
	}
	r.waitConns(8)
	var b strings.Builder
	r.metrics.WritePrometheus(&b)
	for i, s := range r.eng.shards {
		if n := s.n.Load(); n != 2 {
			t.Errorf("shard %d holds %d connections, want 2", i, n)
		}
		if want := fmt.Sprintf("eventloop_shard_connections{shard=\"%d\"} 2\n", i); !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if n := r.metrics.ConnectionsActive.Get(); n != 8 {
		t.Errorf("websocket_connections_active = %v, want 8", n)
	}
}

// A text frame must be UTF-8; a payload that is not is refused once, for every target, and
// the connection carries on.
func TestDeliverSkipsPayloadThatIsNotUTF8(t *testing.T) {
	r := newRig(t)
	c := dialGWS(t, r.wsURL(r.token("alice", nil, time.Hour)), nil)
	r.waitConns(1)
	r.deliver(registry.User, "alice", "\xff\xfe")
	r.deliver(registry.User, "alice", `"ok"`)
	if f := c.next(t); string(f.data) != `"ok"` {
		t.Fatalf("got %q, want the valid message only", f.data)
	}
}
