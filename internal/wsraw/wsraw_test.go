package wsraw

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/rfc6455"
)

// peer is the server end of one test connection: it reads the upgrade request and answers
// with what answer returns.
type peer struct {
	req  chan *http.Request
	conn chan net.Conn
	br   chan *bufio.Reader
}

func listen(t *testing.T, answer func(r *http.Request) []byte) (addr string, p *peer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p = &peer{req: make(chan *http.Request, 1), conn: make(chan net.Conn, 1), br: make(chan *bufio.Reader, 1)}
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { nc.Close() })
		br := bufio.NewReader(nc)
		r, err := http.ReadRequest(br)
		if err != nil {
			nc.Close()
			return
		}
		_, _ = nc.Write(answer(r))
		p.req <- r
		p.conn <- nc
		p.br <- br
	}()
	return ln.Addr().String(), p
}

func switching(r *http.Request, behind ...byte) []byte {
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		rfc6455.Accept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
	return append([]byte(head), behind...)
}

// A dial sends a valid upgrade with the test's header fields and its extra bytes right
// behind; a frame the server sends in the same write as its 101 is not lost; frames the
// client sends arrive masked and unmask back.
func TestDialUpgradesAndExchangesFrames(t *testing.T) {
	first := rfc6455.EncodeFrame(rfc6455.OpText, []byte("welcome"))
	addr, p := listen(t, func(r *http.Request) []byte { return switching(r, first...) })
	c, err := Dial(addr, "/ws?token=x", Options{
		Header: http.Header{"Sec-Websocket-Protocol": {"notifications.v1"}},
		Extra:  Text("early").Encode(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Upgraded(); err != nil {
		t.Fatal(err)
	}
	r := <-p.req
	if r.URL.RequestURI() != "/ws?token=x" || !rfc6455.HeaderHasToken(r.Header, "Upgrade", "websocket") ||
		!rfc6455.HeaderHasToken(r.Header, "Connection", "upgrade") || r.Header.Get("Sec-WebSocket-Version") != "13" ||
		!rfc6455.ValidKey(r.Header.Get("Sec-WebSocket-Key")) || r.Header.Get("Sec-WebSocket-Protocol") != "notifications.v1" {
		t.Fatalf("request %s %v", r.URL, r.Header)
	}
	f, err := c.ReadFrame(time.Now().Add(5 * time.Second))
	if err != nil || !f.Fin || f.Op != rfc6455.OpText || string(f.Payload) != "welcome" {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	if err := c.Send(Frame{Op: rfc6455.OpBinary, Payload: []byte("more"), More: true}, Close(4000, "bye")); err != nil {
		t.Fatal(err)
	}
	br := <-p.br
	for _, want := range []struct {
		fin     bool
		op      byte
		payload string
	}{{true, rfc6455.OpText, "early"}, {false, rfc6455.OpBinary, "more"}, {true, rfc6455.OpClose, "\x0f\xa0bye"}} {
		fin, op, payload := readClientFrame(t, br)
		if fin != want.fin || op != want.op || string(payload) != want.payload {
			t.Fatalf("server read %v %d %q, want %v %d %q", fin, op, payload, want.fin, want.op, want.payload)
		}
	}
}

func readClientFrame(t *testing.T, br *bufio.Reader) (fin bool, op byte, payload []byte) {
	t.Helper()
	head, err := br.Peek(2)
	if err != nil {
		t.Fatal(err)
	}
	if head, err = br.Peek(rfc6455.HeaderSize(head)); err != nil {
		t.Fatal(err)
	}
	h, ok := rfc6455.ParseHeader(head)
	if !ok || !h.Masked {
		t.Fatalf("client header %+v", h)
	}
	_, _ = br.Discard(h.Size)
	payload = make([]byte, h.Length)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	rfc6455.Mask(payload, h.Mask)
	return h.Fin, h.Op, payload
}

// A refusal is an answer, not an error: the connection comes back with it, and Upgraded
// says what it was.
func TestRefusalIsReturnedWithItsStatus(t *testing.T) {
	addr, p := listen(t, func(*http.Request) []byte {
		return []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nno key")
	})
	c, err := Dial(addr, "/ws", Options{NoKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := <-p.req; r.Header.Get("Sec-WebSocket-Key") != "" {
		t.Fatalf("NoKey sent a key: %v", r.Header)
	}
	var he *HandshakeError
	if err := c.Upgraded(); !errors.As(err, &he) || he.Status != http.StatusBadRequest || he.Body != "no key" {
		t.Fatalf("Upgraded() = %v", err)
	}
}

func TestWrongAcceptIsAnError(t *testing.T) {
	addr, _ := listen(t, func(*http.Request) []byte {
		return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: nope\r\n\r\n")
	})
	if c, err := Dial(addr, "/ws", Options{}); err == nil {
		c.Close()
		t.Fatal("a 101 with the wrong Sec-WebSocket-Accept was taken")
	}
}

// Frames no server may send are reported as such, not returned as frames.
func TestReadFrameReportsViolations(t *testing.T) {
	for name, frame := range map[string][]byte{
		"masked":             Text("x").Encode(),
		"reserved bits":      rfc6455.AppendHeader(nil, rfc6455.FinBit|0x40|rfc6455.OpText, 0, false),
		"long control":       rfc6455.AppendHeader(nil, rfc6455.FinBit|rfc6455.OpPing, 126, false),
		"fragmented control": rfc6455.AppendHeader(nil, rfc6455.OpPing, 0, false),
		"over the limit":     rfc6455.AppendHeader(nil, rfc6455.FinBit|rfc6455.OpBinary, 1025, false),
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := listen(t, func(r *http.Request) []byte { return switching(r, frame...) })
			c, err := Dial(addr, "/ws", Options{MaxFrame: 1024})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var v *Violation
			if _, err := c.ReadFrame(time.Now().Add(5 * time.Second)); !errors.As(err, &v) {
				t.Fatalf("ReadFrame = %v, want a violation", err)
			}
		})
	}
}

// ReadUntilClose returns what came before the close frame, and the close frame last.
func TestReadUntilClose(t *testing.T) {
	behind := rfc6455.EncodeFrame(rfc6455.OpText, []byte("one"))
	behind = rfc6455.AppendFrame(behind, rfc6455.OpPing, nil)
	behind = rfc6455.AppendFrame(behind, rfc6455.OpClose, rfc6455.CloseBody(1013, "slow"))
	addr, _ := listen(t, func(r *http.Request) []byte { return switching(r, behind...) })
	c, err := Dial(addr, "/ws", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frames, err := c.ReadUntilClose(time.Now().Add(5 * time.Second))
	if err != nil || len(frames) != 3 || string(frames[0].Payload) != "one" || frames[1].Op != rfc6455.OpPing {
		t.Fatalf("frames %+v, %v", frames, err)
	}
	if last := frames[2]; last.CloseCode() != 1013 || last.CloseReason() != "slow" {
		t.Fatalf("close %d %q", last.CloseCode(), last.CloseReason())
	}
	if (ServerFrame{Op: rfc6455.OpClose}).CloseCode() != rfc6455.CloseNoStatus {
		t.Fatal("an empty close body is not 1005")
	}
}

// Every field of Frame breaks what it says, and only that.
func TestFrameEncodesWhatItNames(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	for _, tc := range []struct {
		f    Frame
		want []byte
	}{
		{Frame{Op: rfc6455.OpText, Payload: []byte("ab"), Key: key}, []byte{0x81, 0x82, 9, 8, 7, 6, 'a' ^ 9, 'b' ^ 8}},
		{Frame{Op: rfc6455.OpText, Payload: []byte("ab"), Unmasked: true}, []byte{0x81, 0x02, 'a', 'b'}},
		{Frame{Op: rfc6455.OpBinary, More: true, RSV: 4, Unmasked: true}, []byte{0x42, 0x00}},
		{Frame{Op: rfc6455.OpBinary, Length: 1 << 63, Unmasked: true}, []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}},
	} {
		if got := tc.f.Encode(); !bytes.Equal(got, tc.want) {
			t.Errorf("%+v encodes as %x, want %x", tc.f, got, tc.want)
		}
	}
	a, b := Text("same").Encode(), Text("same").Encode()
	if bytes.Equal(a, b) {
		t.Error("two frames got the same masking key: keys are not random")
	}
}
