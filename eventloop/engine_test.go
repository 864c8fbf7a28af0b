//go:build linux

package eventloop

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
)

// headReaders are the two ways an upgrade request reaches the engine: net/http's handler,
// and the Front reading it off the socket (as the service runs).
var headReaders = []struct {
	name    string
	harness func(t testing.TB) *harness
}{
	{"net/http", func(t testing.TB) *harness { return newHarness(t, nil) }},
	{"front", func(t testing.TB) *harness { return newFrontHarness(t, 10*time.Second, 64<<10) }},
}

func TestBytesBehindTheHandshakeAreParsed(t *testing.T) {
	for _, hr := range headReaders {
		t.Run(hr.name, func(t *testing.T) { testBytesBehindTheHandshakeAreParsed(t, hr.harness(t)) })
	}
}

func testBytesBehindTheHandshakeAreParsed(t *testing.T, h *harness) {
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

func TestHandshakeValidation(t *testing.T) {
	for _, hr := range headReaders {
		t.Run(hr.name, func(t *testing.T) { testHandshakeValidation(t, hr.harness(t)) })
	}
}

func testHandshakeValidation(t *testing.T, h *harness) {
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
			req, _ := http.NewRequest(method, "http://"+h.addr+"/ws?token="+tok, nil)
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
	var after int
	if !testenv.Until(3*time.Second, func() bool {
		after = countFDs(t)
		return h.liveConns() == 0 && after <= before+2
	}) {
		t.Fatalf("descriptors: %d before, %d after %d cycles (engine holds %d)", before, after, cycles, h.liveConns())
	}
}

func TestIdleConnectionStateIsSmall(t *testing.T) {
	// The struct an idle connection costs besides its registry entries (see
	// TestIdleConnectionMemory for the measured whole).
	if size := unsafe.Sizeof(conn{}); size > 128 {
		t.Fatalf("conn is %d bytes", size)
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
			rc.conn.Close()
			if !testenv.Until(prompt, func() bool { return h.liveConns() == 0 }) {
				t.Fatalf("the server still holds the descriptor %v after the client closed", prompt)
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
