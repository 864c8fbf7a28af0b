//go:build linux

package eventloop

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/message"
)

// The Front reads the first request of every connection itself: these tests drive it through
// real sockets with requests written byte by byte where it matters.

// frontConn is a plain TCP client of a front harness.
type frontConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialFront(t testing.TB, h *harness) *frontConn {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &frontConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (fc *frontConn) write(s string) {
	fc.t.Helper()
	if _, err := fc.c.Write([]byte(s)); err != nil {
		fc.t.Fatal(err)
	}
}

// response reads one HTTP response (its body included).
func (fc *frontConn) response(method string) (*http.Response, string) {
	fc.t.Helper()
	_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(fc.br, &http.Request{Method: method})
	if err != nil {
		fc.t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fc.t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

// expectStatus reads the answer to a GET and fails unless it has status want.
func (fc *frontConn) expectStatus(want int) {
	fc.t.Helper()
	if resp, body := fc.response(http.MethodGet); resp.StatusCode != want {
		fc.t.Fatalf("status %d %q, want %d", resp.StatusCode, body, want)
	}
}

// echo sends a masked text frame and expects its echo.
func (fc *frontConn) echo(text string) {
	fc.t.Helper()
	fc.write(string(cf(opText, text)))
	fc.expectText("Echo: " + text)
}

func (fc *frontConn) expectText(want string) {
	fc.t.Helper()
	op, payload := fc.frame()
	if op != opText || string(payload) != want {
		fc.t.Fatalf("got frame %d %q, want text %q", op, payload, want)
	}
}

// frame reads one unmasked server frame of at most 125 bytes, skipping pings.
func (fc *frontConn) frame() (byte, []byte) {
	fc.t.Helper()
	for {
		_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var hdr [2]byte
		if _, err := io.ReadFull(fc.br, hdr[:]); err != nil {
			fc.t.Fatalf("read frame: %v", err)
		}
		payload := make([]byte, hdr[1]&0x7f)
		if _, err := io.ReadFull(fc.br, payload); err != nil {
			fc.t.Fatalf("read frame: %v", err)
		}
		if op := hdr[0] & 0x0f; op != opPing {
			return op, payload
		}
	}
}

// closedWithin waits until the server closes the connection and returns when, failing if it
// sent anything first.
func (fc *frontConn) closedWithin(d time.Duration) time.Time {
	fc.t.Helper()
	_ = fc.c.SetReadDeadline(time.Now().Add(d))
	b, err := fc.br.ReadByte()
	if err == nil {
		fc.t.Fatalf("server sent %q, want the connection closed", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		fc.t.Fatalf("still open after %v", d)
	}
	return time.Now()
}

func TestFrontAcceptsAnUpgradeAndParsesFramesInTheSameWrite(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	fc.write(wsraw.Head("/ws?token="+h.token(t, "u", nil, time.Hour)) + string(cf(opText, "early")))
	fc.expectStatus(http.StatusSwitchingProtocols)
	fc.expectText("Echo: early")
	fc.echo("later")
}

func TestFrontUpgradeArrivingInPiecesIsAccepted(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	req := wsraw.Head("/ws?token=" + h.token(t, "u", nil, time.Hour))
	// Pieces that end inside the request line, a header name, a CRLF and the final CRLF.
	prev := 0
	for _, cut := range []int{3, 20, 61, len(req) - 3, len(req) - 1, len(req)} {
		fc.write(req[prev:cut])
		prev = cut
		time.Sleep(20 * time.Millisecond) // the pieces under test arrive in separate reads
	}
	fc.expectStatus(http.StatusSwitchingProtocols)
	fc.echo("whole")
}

func TestFrontHandsPipelinedRequestsToNetHTTPInOrder(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	fc.write("GET /other HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /other?b HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []struct{ method, body string }{{"GET", "other GET "}, {"POST", "other POST abc"}, {"GET", "other GET "}} {
		resp, body := fc.response(want.method)
		if resp.StatusCode != http.StatusOK || body != want.body || resp.Header.Get("X-Path") != "/other" {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want.body)
		}
	}
}

func TestFrontUpgradeBehindAnotherRequestIsServedThroughNetHTTP(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	fc.write("GET /other HTTP/1.1\r\nHost: x\r\n\r\n" +
		wsraw.Head("/ws?token="+h.token(t, "u", nil, time.Hour)) + string(cf(opText, "behind")))
	if resp, body := fc.response(http.MethodGet); resp.StatusCode != http.StatusOK || body != "other GET " {
		t.Fatalf("first answer %d %q", resp.StatusCode, body)
	}
	fc.expectStatus(http.StatusSwitchingProtocols)
	fc.expectText("Echo: behind")
	fc.echo("after")
}

// Requests off the plain path get net/http's own answer: the same as without the front.
func TestFrontLeavesRequestsItDoesNotFullyUnderstandToNetHTTP(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	plain := newHarness(t, nil)
	tok := h.token(t, "u", nil, time.Hour)
	for _, tc := range []struct{ name, req string }{
		{"bare LF", strings.ReplaceAll(wsraw.Head("/ws?token="+tok), "\r\n", "\n")},
		{"folded header", wsraw.Head("/ws?token="+tok, "X-Folded: a\r\n b\r\n")},
		{"no Host", strings.Replace(wsraw.Head("/ws?token="+tok), "Host: example.test\r\n", "", 1)},
		{"two Hosts", wsraw.Head("/ws?token="+tok, "Host: other.test\r\n")},
		{"bad Host", strings.Replace(wsraw.Head("/ws?token="+tok), "example.test", "exa mple", 1)},
		{"body", wsraw.Head("/ws?token="+tok, "Content-Length: 1\r\n") + "x"},
		{"chunked", wsraw.Head("/ws?token="+tok, "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n"},
		{"HTTP/1.0", strings.Replace(wsraw.Head("/ws?token="+tok), "HTTP/1.1", "HTTP/1.0", 1)},
		{"HEAD", strings.Replace(wsraw.Head("/ws?token="+tok), "GET", "HEAD", 1)},
		{"other path", wsraw.Head("/other")},
		{"path with a dot segment", wsraw.Head("/x/../ws?token=" + tok)},
		{"space in a name", wsraw.Head("/ws?token="+tok, "Bad Name: x\r\n")},
		{"control character in a value", wsraw.Head("/ws?token="+tok, "X-Bad: a\x01b\r\n")},
		{"not an upgrade", "GET /ws?token=" + tok + " HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if strings.HasPrefix(tc.req, "HEAD") {
				method = http.MethodHead
			}
			status := func(h *harness) string {
				fc := dialFront(t, h)
				fc.write(tc.req)
				_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(fc.br, &http.Request{Method: method})
				if err != nil {
					return "no response: " + err.Error()
				}
				resp.Body.Close()
				return resp.Status
			}
			if got, want := status(h), status(plain); got != want {
				t.Fatalf("through the front: %s; net/http alone: %s", got, want)
			}
		})
	}
}

func TestFrontRefusalIsAnsweredLikeNetHTTPAndTheConnectionStaysUsable(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	fc.write(strings.Replace(wsraw.Head("/ws?token="+h.token(t, "u", nil, time.Hour)), "Version: 13", "Version: 8", 1))
	resp, body := fc.response(http.MethodGet)
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Sec-WebSocket-Version") != "13" ||
		resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Content-Type-Options") != "nosniff" ||
		resp.Header.Get("Date") == "" || body != "websocket: unsupported version (want 13)\n" {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, body)
	}
	fc.write("GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := fc.response(http.MethodGet); resp.StatusCode != http.StatusOK || body != "other GET " {
		t.Fatalf("next request: %d %q", resp.StatusCode, body)
	}
}

func TestFrontRejectedTokenGetsErrorMessageAndClose1008(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	fc.write(wsraw.Head("/ws?token=not-a-token"))
	fc.expectStatus(http.StatusSwitchingProtocols)
	if op, p := fc.frame(); op != opText || !bytes.Contains(p, []byte(message.CodeAuthFailed)) {
		t.Fatalf("got %d %q, want the AUTH_FAILED error", op, p)
	}
	if op, p := fc.frame(); op != opClose || len(p) < 2 || uint16(p[0])<<8|uint16(p[1]) != message.ClosePolicyViolation {
		t.Fatalf("got %d %q, want close 1008", op, p)
	}
	if len(h.hooks.snapshot()) != 0 {
		t.Fatal("a rejected upgrade reached Closed")
	}
}

func TestFrontHeadOverTheLimitGets431FromNetHTTP(t *testing.T) {
	const maxHeaderBytes = 1 << 10 // net/http reads up to 1 KiB + 4 KiB
	h := newFrontHarness(t, 10*time.Second, maxHeaderBytes)
	tok := h.token(t, "u", nil, time.Hour)
	for _, tc := range []struct {
		name   string
		req    string
		status int
	}{
		{"upgrade within the slack", wsraw.Head("/ws?token="+tok, "X-Pad: "+strings.Repeat("p", 3000)+"\r\n"), http.StatusSwitchingProtocols},
		{"upgrade over it", wsraw.Head("/ws?token="+tok, "X-Pad: "+strings.Repeat("p", 6000)+"\r\n"), http.StatusRequestHeaderFieldsTooLarge},
		{"upgrade over it, unfinished", "GET /ws HTTP/1.1\r\nX-Pad: " + strings.Repeat("p", 6000), http.StatusRequestHeaderFieldsTooLarge},
		{"other request over it", "GET /other HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 6000) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := dialFront(t, h)
			fc.write(tc.req)
			fc.expectStatus(tc.status)
		})
	}
}

func TestFrontClosesAHeadNotCompleteInTime(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := newFrontHarness(t, timeout, 64<<10)
	t.Run("trickled", func(t *testing.T) {
		fc := dialFront(t, h)
		start := time.Now()
		stop := make(chan struct{})
		defer close(stop)
		go func() { // a byte every 50 ms: never idle, never complete
			for _, b := range []byte(wsraw.Head("/ws?token=x")) {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := fc.c.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
		if took := fc.closedWithin(5 * time.Second).Sub(start); took < timeout-50*time.Millisecond {
			t.Fatalf("closed after %v, before the %v timeout", took, timeout)
		}
	})
	t.Run("silent", func(t *testing.T) {
		fc := dialFront(t, h)
		start := time.Now()
		if took := fc.closedWithin(5 * time.Second).Sub(start); took < timeout-50*time.Millisecond {
			t.Fatalf("closed after %v, before the %v timeout", took, timeout)
		}
	})
	t.Run("a complete head in time is served", func(t *testing.T) {
		fc := dialFront(t, h)
		time.Sleep(timeout / 2) // the head comes late, but in time: the timing under test
		fc.write(wsraw.Head("/ws?token=" + h.token(t, "u", nil, time.Hour)))
		fc.expectStatus(http.StatusSwitchingProtocols)
		time.Sleep(timeout) // past the head's deadline the connection is the shard's
		fc.echo("still here")
	})
}

func TestFrontCloseClosesHeadsStillArriving(t *testing.T) {
	h := newFrontHarness(t, 10*time.Second, 64<<10)
	fc := dialFront(t, h)
	fc.write("GET /ws HTTP/1.1\r\nHost: x\r\n")
	// Most likely the front has read it and waits for the rest by now; if not, Close still
	// has to close it (from the listener's queue), so the assertion holds either way.
	time.Sleep(50 * time.Millisecond)
	if err := h.front.Close(); err != nil {
		t.Fatal(err)
	}
	fc.closedWithin(2 * time.Second)
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Fatal("still accepting after Close")
	}
}

func TestFrontRemoteAddrIsThePeersAddress(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skip(err)
			}
			got := make(chan string, 1)
			e := newFrontHarness(t, time.Second, 1<<10).engine
			front, err := e.Front(ln, "/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- r.RemoteAddr
				http.Error(w, "no", http.StatusForbidden)
			}), time.Second, 1<<10)
			if err != nil {
				t.Fatal(err)
			}
			defer front.Close()
			c, err := net.Dial(tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(wsraw.Head("/ws"))); err != nil {
				t.Fatal(err)
			}
			if a := <-got; a != c.LocalAddr().String() {
				t.Fatalf("RemoteAddr %q, want %q", a, c.LocalAddr())
			}
		})
	}
}

// BenchmarkParseHead is the front's work on a typical browser upgrade head.
func BenchmarkParseHead(b *testing.B) {
	head := []byte(wsraw.Head("/ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSIsImdyb3VwcyI6WyJnMSJdfQ.c2lnbmF0dXJlc2lnbmF0dXJl",
		"Origin: https://app.example.test\r\n", "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/140.0\r\n",
		"Sec-WebSocket-Protocol: notifications.v1\r\n", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
		"Accept-Language: en-GB,en;q=0.5\r\n", "Cache-Control: no-cache\r\n"))
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		end := headEnd(head, 0)
		if _, ok := parseHead(head[:end], "/ws"); !ok {
			b.Fatal("not parsed")
		}
	}
}

// headEnd finds the end of a head however it was cut into reads, with a CRLF or a bare-LF
// blank line, and not before it has arrived.
func TestHeadEndWhereverTheReadsAreCut(t *testing.T) {
	for _, tc := range []struct {
		head string
		end  int // -1: no end yet
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody", 27},
		{"GET / HTTP/1.1\nHost: x\n\nbody", 24},
		{"GET / HTTP/1.1\r\nHost: x\n\r\nbody", 26},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r", -1},
		{"GET / HTTP/1.1\r\nHost: x\r\n", -1},
	} {
		b := []byte(tc.head)
		for cut := 0; cut <= len(b); cut++ {
			got := headEnd(b[:cut], 0)
			if got < 0 {
				got = headEnd(b, cut)
			}
			if got != tc.end {
				t.Errorf("%q read up to %d, then whole: end %d, want %d", tc.head, cut, got, tc.end)
			}
		}
	}
}
