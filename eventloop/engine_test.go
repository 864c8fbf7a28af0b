//go:build linux

package eventloop

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/coder/websocket"
	"github.com/lxzan/gws"
	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// gwsClient collects what a gws client receives.
type gwsClient struct {
	gws.BuiltinEventHandler
	conn     *gws.Conn
	messages chan gwsMessage
	closed   chan error
}

type gwsMessage struct {
	op   gws.Opcode
	data []byte
}

func (c *gwsClient) OnPing(socket *gws.Conn, payload []byte) { _ = socket.WritePong(payload) }

func (c *gwsClient) OnMessage(socket *gws.Conn, m *gws.Message) {
	c.messages <- gwsMessage{op: m.Opcode, data: bytes.Clone(m.Bytes())}
	m.Close()
}

func (c *gwsClient) OnClose(socket *gws.Conn, err error) { c.closed <- err }

func dialGWS(t testing.TB, url string) *gwsClient {
	t.Helper()
	c := &gwsClient{messages: make(chan gwsMessage, 4096), closed: make(chan error, 1)}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: url, ReadMaxPayloadSize: 1 << 20})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() {
		_ = conn.NetConn().Close()
		<-c.closed
	})
	return c
}

func (c *gwsClient) next(t testing.TB) gwsMessage {
	t.Helper()
	select {
	case m := <-c.messages:
		return m
	case err := <-c.closed:
		c.closed <- err
		select { // both were ready (a reply and a close frame read at once): the message came first
		case m := <-c.messages:
			return m
		default:
		}
		t.Fatalf("closed while waiting for a message: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return gwsMessage{}
}

func (c *gwsClient) closeCode(t testing.TB, within time.Duration) uint16 {
	t.Helper()
	select {
	case err := <-c.closed:
		c.closed <- err
		var ce *gws.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return message.CloseAbnormal
	case <-time.After(within):
		t.Fatalf("not closed within %v", within)
	}
	return 0
}

func TestEchoTextAndBinaryAtFrameSizeBoundaries(t *testing.T) {
	h := newHarness(t, nil)
	c := dialGWS(t, h.wsURL(t, "echo"))
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		text := strings.Repeat("t", n)
		if err := c.conn.WriteString(text); err != nil {
			t.Fatal(err)
		}
		if m := c.next(t); m.op != gws.OpcodeText || string(m.data) != message.EchoPrefix+text {
			t.Fatalf("text %d: got opcode %d, %d bytes", n, m.op, len(m.data))
		}
		bin := bytes.Repeat([]byte{0xFF, 0x00}, n/2)
		if err := c.conn.WriteMessage(gws.OpcodeBinary, bin); err != nil {
			t.Fatal(err)
		}
		if m := c.next(t); m.op != gws.OpcodeBinary || !bytes.Equal(m.data, bin) {
			t.Fatalf("binary %d: got opcode %d, %d bytes", n, m.op, len(m.data))
		}
	}
	if got := h.metrics.MessagesReceived.Get(); got != 12 {
		t.Fatalf("websocket_messages_received_total = %d, want 12", got)
	}
}

func TestEchoWithCoderClient(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, h.wsURL(t, "coder"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for _, text := range []string{"hi", strings.Repeat("x", 70000)[:65536]} {
		if err := c.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageText || string(got) != message.EchoPrefix+text {
			t.Fatalf("read %v %d bytes err %v", typ, len(got), err)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	calls := h.hooks.waitCalls(t, 1, 3*time.Second)
	if calls[0].code != 1000 {
		t.Fatalf("Closed code %d, want 1000", calls[0].code)
	}
}

func TestBytesBehindTheHandshakeAreParsed(t *testing.T) {
	h := newHarness(t, nil)
	// Two frames and a ping sent in the same write as the upgrade request.
	extra := cat(cf(opText, "one"), cf(opPing, "p"), clientFrame(false, 0, opText, []byte("tw"), false))
	rc := h.dialRaw(t, "early", extra)
	rc.send(clientFrame(true, 0, opContinuation, []byte("o"), false))
	if op, p := rc.expectFrame(2 * time.Second); op != opText || string(p) != "Echo: one" {
		t.Fatalf("got %d %q", op, p)
	}
	_, op, p, err := rc.readFrame(2 * time.Second)
	if err != nil || op != opPong || string(p) != "p" {
		t.Fatalf("want pong p, got %d %q %v", op, p, err)
	}
	if op, p := rc.expectFrame(2 * time.Second); op != opText || string(p) != "Echo: two" {
		t.Fatalf("got %d %q", op, p)
	}
}

func TestSubprotocolSelectedButTokenNeverEchoed(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok := h.token(t, "proto", nil, time.Hour)
	c, resp, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{Subprotocols: []string{session.Subprotocol, session.BearerPrefix + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != session.Subprotocol || c.Subprotocol() != session.Subprotocol {
		t.Fatalf("selected %q", got)
	}
	// Without the offer, no subprotocol header at all.
	rc := h.dialRaw(t, "proto", nil)
	if v := rc.resp.Header.Values("Sec-WebSocket-Protocol"); len(v) != 0 {
		t.Fatalf("unexpected Sec-WebSocket-Protocol %q", v)
	}
}

func TestHandshakeValidation(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(t, "hs", nil, time.Hour)
	good := func() http.Header {
		return http.Header{
			"Upgrade":               {"websocket"},
			"Connection":            {"keep-alive, Upgrade"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		}
	}
	for _, tc := range []struct {
		name   string
		method string
		edit   func(http.Header)
		status int
	}{
		{"post", http.MethodPost, nil, 400},
		{"no upgrade", "", func(hd http.Header) { hd.Del("Upgrade") }, 400},
		{"connection without upgrade", "", func(hd http.Header) { hd.Set("Connection", "keep-alive") }, 400},
		{"version 8", "", func(hd http.Header) { hd.Set("Sec-Websocket-Version", "8") }, 426},
		{"short key", "", func(hd http.Header) { hd.Set("Sec-Websocket-Key", "c2hvcnQ=") }, 400},
		{"key not base64", "", func(hd http.Header) { hd.Set("Sec-Websocket-Key", "!!!!!!!!!!!!!!!!!!!!!!!!") }, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, h.srv.URL+"/ws?token="+tok, nil)
			req.Header = good()
			if tc.edit != nil {
				tc.edit(req.Header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 426 && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Fatal("426 without Sec-WebSocket-Version: 13")
			}
		})
	}
	if len(h.hooks.snapshot()) != 0 {
		t.Fatal("a refused handshake reached Closed")
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestRejectSendsErrorAndClose1008(t *testing.T) {
	h := newHarness(t, nil)
	rc := dialRaw(t, h.addr, "/ws?token=not-a-jwt", nil, nil)
	if rc.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", rc.resp.StatusCode)
	}
	code, before := rc.expectClose(2 * time.Second)
	if code != 1008 || len(before) != 1 || !bytes.Contains(before[0], []byte(message.CodeAuthFailed)) {
		t.Fatalf("close %d after %q", code, before)
	}
	rc.send(cf(opClose, "\x03\xf0"))
	rc.expectEOF(2 * time.Second)
	// The coder client sees the same as a close status.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, h.url+"?token="+h.token(t, "late", nil, -time.Minute), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, data, err := c.Read(ctx)
	if err != nil || !bytes.Contains(data, []byte(message.CodeTokenExpired)) {
		t.Fatalf("read %q %v", data, err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 1008 {
		t.Fatalf("close status %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(h.hooks.snapshot()); n != 0 {
		t.Fatalf("Reject led to %d Closed calls", n)
	}
	if h.metrics.ConnectionsActive.Get() != 0 {
		t.Fatal("a rejected connection was counted active")
	}
}

func TestDeliveryToUserGroupAndBroadcast(t *testing.T) {
	h := newHarness(t, func(o *session.Options) { o.Shards = 3 })
	a1 := dialGWS(t, h.wsURL(t, "alice", "class-1"))
	a2 := dialGWS(t, h.wsURL(t, "alice", "class-1"))
	b := dialGWS(t, h.wsURL(t, "bob", "class-1", "class-2"))
	c := dialGWS(t, h.wsURL(t, "carol"))
	h.engine.Deliver([]registry.Delivery{
		{Target: registry.Target{Kind: registry.User, ID: "alice"}, Payload: []byte(`{"n":1}`)},
		{Target: registry.Target{Kind: registry.Group, ID: "class-1"}, Payload: []byte(`{"n":2}`)},
		{Target: registry.Target{Kind: registry.User, ID: "nobody"}, Payload: []byte(`{"n":0}`)},
	})
	h.engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.Broadcast}, Payload: []byte(`{"n":3}`)}})
	want := map[*gwsClient][]string{
		a1: {`{"n":1}`, `{"n":2}`, `{"n":3}`},
		a2: {`{"n":1}`, `{"n":2}`, `{"n":3}`},
		b:  {`{"n":2}`, `{"n":3}`},
		c:  {`{"n":3}`},
	}
	for cl, msgs := range want {
		for _, w := range msgs {
			if m := cl.next(t); string(m.data) != w || m.op != gws.OpcodeText {
				t.Fatalf("got %q, want %q", m.data, w)
			}
		}
	}
	select {
	case m := <-c.messages:
		t.Fatalf("carol got an extra %q", m.data)
	case <-time.After(50 * time.Millisecond):
	}
	if got := h.metrics.MessagesSent.Get(); got != 2+3+4 {
		t.Fatalf("websocket_messages_sent_total = %d, want 9", got)
	}
}

func TestMessageDeliveredRightAfterOpenIsNotMissed(t *testing.T) {
	h := newHarness(t, nil)
	for i := range 20 {
		user := fmt.Sprintf("fresh-%d", i)
		c := dialGWS(t, h.wsURL(t, user))
		h.engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.User, ID: user}, Payload: []byte("hi")}})
		if m := c.next(t); string(m.data) != "hi" {
			t.Fatalf("got %q", m.data)
		}
	}
}

func TestSlowConsumerClosed1013WhileOthersKeepReceiving(t *testing.T) {
	h := newHarness(t, func(o *session.Options) { o.SendQueueLimit = 256 << 10; o.Shards = 1 })
	fast := dialGWS(t, h.wsURL(t, "fast"))
	slow := h.dialRaw(t, "slow", nil) // never reads
	payload := bytes.Repeat([]byte("n"), 8<<10)
	got := 0
	sent := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range fast.messages {
			if len(m.data) != len(payload) {
				t.Errorf("fast client got %d bytes: %.60q", len(m.data), m.data)
				return
			}
			got++
			if got == 1500 {
				return
			}
		}
	}()
	// 10 × 8 KiB every 5 ms (16 MB/s): a reader that keeps up has hundreds of milliseconds of
	// slack under the limit even when -race and parallel test packages stall it, while the
	// 12 MB in all are far past what the slow client's socket and the limit can hold.
	for sent < 1500 {
		batch := make([]registry.Delivery, 10)
		for i := range batch {
			batch[i] = registry.Delivery{Target: registry.Target{Kind: registry.Broadcast}, Payload: payload}
		}
		h.engine.Deliver(batch)
		sent += len(batch)
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the fast client got %d of %d messages", got, sent)
	}
	if got != sent {
		t.Fatalf("fast client got %d of %d", got, sent)
	}
	if codes := h.hooks.codesFor("slow"); len(codes) != 1 || codes[0] != 1013 {
		t.Fatalf("slow client Closed codes %v, want [1013]", codes)
	}
	if codes := h.hooks.codesFor("fast"); len(codes) != 0 {
		t.Fatalf("fast client was closed: %v", codes)
	}
	var out bytes.Buffer
	h.metrics.WritePrometheus(&out)
	if !strings.Contains(out.String(), `websocket_messages_dropped_total{reason="slow_consumer"}`) ||
		strings.Contains(out.String(), `websocket_messages_dropped_total{reason="slow_consumer"} 0`) {
		t.Fatal("no slow_consumer drops counted")
	}
	slow.expectEOF(5 * time.Second)
}

func TestInboundMessageOverLimitCloses1009(t *testing.T) {
	h := newHarness(t, func(o *session.Options) { o.MaxMessageSize = 1024 })
	t.Run("frame header", func(t *testing.T) {
		rc := h.dialRaw(t, "big", nil)
		// Only the header of a 2^40-byte frame: refused from the header.
		rc.send([]byte{0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4})
		code, before := rc.expectClose(2 * time.Second)
		if code != 1009 || len(before) != 1 || !bytes.Contains(before[0], []byte(message.CodeMessageTooLarge)) {
			t.Fatalf("close %d after %q", code, before)
		}
	})
	t.Run("fragments", func(t *testing.T) {
		c := dialGWS(t, h.wsURL(t, "big"))
		if err := c.conn.WriteString(strings.Repeat("y", 2000)); err != nil {
			t.Fatal(err)
		}
		if code := c.closeCode(t, 3*time.Second); code != 1009 {
			t.Fatalf("close %d", code)
		}
	})
	calls := h.hooks.waitCalls(t, 2, 3*time.Second)
	for _, c := range calls {
		if c.code != 1009 {
			t.Fatalf("Closed code %d", c.code)
		}
	}
}

func TestProtocolErrorsCloseWithTheRightCode(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		name  string
		frame []byte
		code  uint16
	}{
		{"unmasked", clientFrame(true, 0, opText, []byte("x"), true), 1002},
		{"rsv bit", clientFrame(true, 2, opText, []byte("x"), false), 1002},
		{"bad opcode", cf(0x6, "x"), 1002},
		{"invalid utf-8", cf(opText, "\xff"), 1007},
		{"invalid close code", cf(opClose, "\x03\xed"), 1002},
		{"peer close 4000 is echoed", cf(opClose, "\x0f\xa0bye"), 4000},
		{"empty peer close", cf(opClose, ""), 1005},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := "proto-" + tc.name
			rc := h.dialRaw(t, user, nil)
			rc.send(tc.frame)
			code, _ := rc.expectClose(2 * time.Second)
			if code != tc.code {
				t.Fatalf("close frame %d, want %d", code, tc.code)
			}
			rc.expectEOF(3 * time.Second)
			deadline := time.Now().Add(2 * time.Second)
			for len(h.hooks.codesFor(user)) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if codes := h.hooks.codesFor(user); len(codes) != 1 || codes[0] != tc.code {
				t.Fatalf("Closed codes %v, want [%d]", codes, tc.code)
			}
		})
	}
}

func TestHeartbeatPingsAndSilenceCloses1001(t *testing.T) {
	h := newHarness(t, func(o *session.Options) {
		o.HeartbeatInterval = 100 * time.Millisecond
		o.ConnectionTimeout = 500 * time.Millisecond
	})
	start := time.Now() // before the handshake: the server counts the silence from it
	silent := h.dialRaw(t, "silent", nil)
	pings := 0
	var code uint16
	for {
		_, op, p, err := silent.readFrame(3 * time.Second)
		if err != nil {
			t.Fatalf("read: %v after %d pings", err, pings)
		}
		if op == opPing {
			pings++
			continue
		}
		if op != opClose {
			t.Fatalf("unexpected opcode %d", op)
		}
		code = binary.BigEndian.Uint16(p)
		break
	}
	// How many pings fit in the silence depends on how often this machine lets the shard run
	// (a shard that runs late sends fewer: two in 500 ms were seen under load); that they keep
	// coming is what keeps the client below open past the timeout.
	elapsed := time.Since(start)
	if code != 1001 || pings < 1 || elapsed < 450*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("close %d after %d pings and %v", code, pings, elapsed)
	}
	t.Logf("close 1001 after %d pings and %v", pings, elapsed)
	// A client that answers pings (gws does) stays open past the timeout.
	alive := dialGWS(t, h.wsURL(t, "alive"))
	time.Sleep(1200 * time.Millisecond)
	if err := alive.conn.WriteString("still here"); err != nil {
		t.Fatal(err)
	}
	if m := alive.next(t); string(m.data) != "Echo: still here" {
		t.Fatalf("got %q", m.data)
	}
	if codes := h.hooks.codesFor("silent"); len(codes) != 1 || codes[0] != 1001 {
		t.Fatalf("Closed codes %v", codes)
	}
}

func TestExpiredTokenCloses1008AndRefreshExtends(t *testing.T) {
	h := newHarness(t, nil)
	// A token living about a second (exp has one-second resolution).
	rc := dialRaw(t, h.addr, "/ws?token="+h.token(t, "short", nil, time.Second), nil, nil)
	refreshed := dialGWS(t, h.url+"?token="+h.token(t, "renew", nil, time.Second))
	if err := refreshed.conn.WriteString(`{"type":"auth","token":"` + h.token(t, "renew", nil, time.Hour) + `"}`); err != nil {
		t.Fatal(err)
	}
	if m := refreshed.next(t); !bytes.Contains(m.data, []byte(message.TypeAuthOK)) {
		t.Fatalf("refresh answer %q", m.data)
	}
	code, before := rc.expectClose(3 * time.Second)
	if code != 1008 || len(before) != 1 || !bytes.Contains(before[0], []byte(message.CodeTokenExpired)) {
		t.Fatalf("close %d after %q", code, before)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := refreshed.conn.WriteString("alive"); err != nil {
		t.Fatal(err)
	}
	if m := refreshed.next(t); string(m.data) != "Echo: alive" {
		t.Fatalf("refreshed connection: %q", m.data)
	}
	if codes := h.hooks.codesFor("short"); len(codes) != 1 || codes[0] != 1008 {
		t.Fatalf("Closed codes %v", codes)
	}
}

func TestBadRefreshCloses1008(t *testing.T) {
	h := newHarness(t, nil)
	c := dialGWS(t, h.wsURL(t, "dave"))
	if err := c.conn.WriteString(`{"type":"auth","token":"` + h.token(t, "mallory", nil, time.Hour) + `"}`); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); !bytes.Contains(m.data, []byte(message.CodeAuthFailed)) {
		t.Fatalf("got %q", m.data)
	}
	if code := c.closeCode(t, 3*time.Second); code != 1008 {
		t.Fatalf("close %d", code)
	}
}

func TestDrainSpreadsClosesOverTheWindow(t *testing.T) {
	h := newHarness(t, nil)
	const n = 20
	clients := make([]*gwsClient, n)
	for i := range clients {
		clients[i] = dialGWS(t, h.wsURL(t, fmt.Sprintf("d%d", i)))
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.engine.Drain(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	calls := h.hooks.waitCalls(t, n, time.Second)
	first, last := calls[0].at.Sub(start), calls[n-1].at.Sub(start)
	for _, c := range calls {
		if c.code != 1001 {
			t.Fatalf("Closed code %d", c.code)
		}
	}
	if first > 300*time.Millisecond || last < 700*time.Millisecond || took > 3*time.Second {
		t.Fatalf("closes from %v to %v, Drain took %v", first, last, took)
	}
	// Closes in each tenth of the window, roughly evenly.
	var buckets [4]int
	for _, c := range calls {
		buckets[min(3, int(c.at.Sub(start)/(250*time.Millisecond)))]++
	}
	for i, b := range buckets {
		if b < 2 {
			t.Fatalf("quarter %d of the window had %d closes: %v", i, b, buckets)
		}
	}
	for _, c := range clients {
		if code := c.closeCode(t, 2*time.Second); code != 1001 {
			t.Fatalf("client saw %d", code)
		}
	}
	if err := h.engine.Accept(httptestRecorder(), &http.Request{}, session.Admission{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept while draining: %v", err)
	}
}

func TestClosedHookExactlyOncePerConnection(t *testing.T) {
	h := newHarness(t, func(o *session.Options) { o.MaxMessageSize = 100 })
	var wg sync.WaitGroup
	const each = 10
	paths := []func(rc *rawClient){
		func(rc *rawClient) { rc.send(cf(opClose, "\x03\xe8")); rc.expectClose(2 * time.Second) }, // peer close
		func(rc *rawClient) { rc.conn.Close() },                                                   // vanish
		func(rc *rawClient) { rc.send(cf(opText, strings.Repeat("z", 200))) },                     // 1009
		func(rc *rawClient) { rc.send(clientFrame(true, 0, opText, []byte("u"), true)) },          // 1002
		func(rc *rawClient) { rc.send(cf(opClose, "\x03\xe8"), cf(opText, "late")); rc.conn.Close() },
	}
	for p, path := range paths {
		for i := range each {
			rc := h.dialRaw(t, fmt.Sprintf("p%d-%d", p, i), nil)
			wg.Add(1)
			go func() { defer wg.Done(); path(rc) }()
		}
	}
	wg.Wait()
	total := len(paths) * each
	h.hooks.waitCalls(t, total, 5*time.Second)
	time.Sleep(1200 * time.Millisecond) // past every closing deadline
	calls := h.hooks.snapshot()
	if len(calls) != total {
		t.Fatalf("%d Closed calls for %d connections", len(calls), total)
	}
	seen := map[*session.Identity]bool{}
	for _, c := range calls {
		if seen[c.id] {
			t.Fatalf("Closed twice for %s", c.user)
		}
		seen[c.id] = true
	}
	if n := h.liveConns(); n != 0 {
		t.Fatalf("%d descriptors still held", n)
	}
	if g := h.metrics.ConnectionsActive.Get(); g != 0 {
		t.Fatalf("websocket_connections_active = %v", g)
	}
}

func TestNoDescriptorLeakAfter1000Cycles(t *testing.T) {
	h := newHarness(t, nil)
	cycles := 1000
	if raceEnabled {
		cycles = 300
	}
	warm := h.dialRaw(t, "warm", nil) // let net/http and the loops settle
	warm.conn.Close()
	h.hooks.waitCalls(t, 1, 2*time.Second)
	before := countFDs(t)
	for i := range cycles {
		rc := h.dialRaw(t, "cycle", nil)
		if i%2 == 0 {
			rc.send(cf(opClose, "\x03\xe8"))
			rc.expectClose(2 * time.Second)
		}
		rc.conn.Close()
	}
	h.hooks.waitCalls(t, cycles+1, 10*time.Second)
	// Accept closes the request's own descriptor after the shard has registered the
	// connection, which can be after the client already had its 101 and left: wait for the
	// stragglers instead of counting once.
	deadline := time.Now().Add(3 * time.Second)
	after := countFDs(t)
	for (h.liveConns() != 0 || after > before+2) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		after = countFDs(t)
	}
	if h.liveConns() != 0 || after > before+2 {
		t.Fatalf("descriptors: %d before, %d after %d cycles (engine holds %d)", before, after, cycles, h.liveConns())
	}
}

func TestCloseEndsConnectionsWith1001AndLeavesNothing(t *testing.T) {
	h := newHarness(t, nil)
	a := dialGWS(t, h.wsURL(t, "a"))
	b := h.dialRaw(t, "b", nil)
	if err := h.engine.Close(); err != nil {
		t.Fatal(err)
	}
	if code := a.closeCode(t, 2*time.Second); code != 1001 {
		t.Fatalf("gws client saw %d", code)
	}
	if code, _ := b.expectClose(2 * time.Second); code != 1001 {
		t.Fatalf("raw client saw %d", code)
	}
	b.expectEOF(2 * time.Second)
	if calls := h.hooks.snapshot(); len(calls) != 2 {
		t.Fatalf("%d Closed calls", len(calls))
	}
	if err := h.engine.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	h.engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.Broadcast}, Payload: []byte("x")}})
}

func TestShardConnectionsMetric(t *testing.T) {
	h := newHarness(t, func(o *session.Options) { o.Shards = 2 })
	for i := range 4 {
		h.dialRaw(t, fmt.Sprintf("m%d", i), nil)
		if err := <-h.accepts; err != nil { // Accept has returned: the handshake is recorded
			t.Fatal(err)
		}
	}
	// Accept does not wait for the shard to register the connection; the shard takes it
	// within adoptPoll (or at once when it is not polling).
	wants := []string{`eventloop_shard_connections{shard="0"} 2`, `eventloop_shard_connections{shard="1"} 2`, "websocket_connections_active 4", "websocket_handshake_duration_seconds_count 4"}
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var out bytes.Buffer
		h.metrics.WritePrometheus(&out)
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(out.String(), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("metrics lack %q after 5 s", m)
	}
}

func TestNewRequiresPolicy(t *testing.T) {
	if _, err := New(session.Options{Metrics: telemetry.New()}); err == nil {
		t.Fatal("New without a Policy succeeded")
	}
}

func TestIdleConnectionStateIsSmall(t *testing.T) {
	// The struct an idle connection costs besides its registry entries (see
	// TestIdleConnectionMemory for the measured whole).
	if size := unsafe.Sizeof(conn{}); size > 128 {
		t.Fatalf("conn is %d bytes", size)
	}
}

func TestDrainReturnsWhenContextEnds(t *testing.T) {
	h := newHarness(t, nil)
	h.dialRaw(t, "stays", nil) // never answers our close: its fd lingers up to a second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.engine.Drain(ctx, 10*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want deadline exceeded", err)
	}
}

// After the server fails a connection (1002, 1007, 1009) its parser cannot recognise the
// client's answering close frame, yet TCP must end at once after the closing handshake
// (RFC 6455 §5.5.1, §7.1.1), not when the closing deadline runs out; and input still in
// flight must not make the server reset the connection before the client has read the close
// frame.
func TestFailedConnectionEndsTCPAtOnceAfterTheClosingHandshake(t *testing.T) {
	const prompt = 500 * time.Millisecond // the closing deadline is 1 s
	junk := bytes.Repeat([]byte{0xA5}, 256<<10)
	for _, tc := range []struct {
		name  string
		input []byte
		code  uint16
	}{
		{"rsv bit", clientFrame(true, 2, opText, []byte("x"), false), 1002},
		{"invalid utf-8", cf(opText, "\xff"), 1007},
		{"header of a 2^40-byte frame", []byte{0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 1009},
		{"bad frame followed by more input", cat(clientFrame(true, 0, opText, []byte("x"), true), junk), 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *session.Options) { o.MaxMessageSize = 1024 })
			rc := h.dialRaw(t, "failed", nil)
			rc.send(tc.input)
			code, _ := rc.expectClose(2 * time.Second)
			if code != tc.code {
				t.Fatalf("close frame %d, want %d", code, tc.code)
			}
			answered := time.Now()
			rc.send(clientFrame(true, 0, opClose, binary.BigEndian.AppendUint16(nil, code), false))
			rc.expectEOF(2 * time.Second)
			if d := time.Since(answered); d > prompt {
				t.Fatalf("the server ended TCP %v after the client's close frame, want at once (< %v)", d, prompt)
			}
			closed := time.Now()
			rc.conn.Close()
			for h.liveConns() != 0 {
				if d := time.Since(closed); d > prompt {
					t.Fatalf("the server still holds the descriptor %v after the client closed", d)
				}
				time.Sleep(2 * time.Millisecond)
			}
			if codes := h.hooks.codesFor("failed"); len(codes) != 1 || codes[0] != tc.code {
				t.Fatalf("Closed codes %v, want [%d]", codes, tc.code)
			}
		})
	}
}

// Accept returns before the shard takes the connection in. If the shard stops first, the
// connection (whose client may already have its 101) must still end in exactly one Closed, so
// the service releases its subscriptions and limit slots, and its socket must be closed.
func TestAdoptionAfterStopIsReportedClosed(t *testing.T) {
	h := newHarness(t, func(o *session.Options) { o.Shards = 1 })
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	l := h.engine.loops[0]
	l.load.Add(1)
	ho := &handoff{fd: fds[0], adm: session.Admission{Identity: session.Identity{User: "late"}}}
	// One batch: the stop is applied first, so the adoption that follows finds the shard stopping.
	l.mu.Lock()
	l.queue = append(l.queue, task{kind: taskStop}, task{kind: taskAdopt, h: ho})
	l.wakeOwed = true
	l.wakers++ // the claim wake gives up
	l.mu.Unlock()
	l.wake()

	calls := h.hooks.waitCalls(t, 1, 5*time.Second)
	if len(calls) != 1 || calls[0].user != "late" || calls[0].code != message.CloseGoingAway {
		t.Fatalf("Closed calls %+v, want one for %q with 1001", calls, "late")
	}
	if err := peer.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read %d, %v: want EOF (the shard closes the descriptor)", n, err)
	}
	if got := l.load.Load(); got != 0 {
		t.Fatalf("shard load %d after the refused adoption, want 0", got)
	}
	if err := h.engine.Close(); err != nil {
		t.Fatal(err)
	}
	if calls := h.hooks.snapshot(); len(calls) != 1 {
		t.Fatalf("%d Closed calls after Close, want exactly 1", len(calls))
	}
}
