//go:build linux

package eventloop

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/session"
)

// The loop relies on the duplicate being non-blocking without setting it (dupConn) and on it
// not leaking into child processes.
func TestDuplicateIsNonBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(server)
	if _, err := br.Peek(5); err != nil {
		t.Fatal(err)
	}
	fd, pending, err := dupConn(server, br)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	server.Close() // as Accept does: the duplicate must stand on its own

	if string(pending) != "early" {
		t.Errorf("pending = %q, want the buffered %q", pending, "early")
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Error("duplicate is blocking")
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fdfl&unix.FD_CLOEXEC == 0 {
		t.Error("duplicate is not close-on-exec")
	}
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != unix.EAGAIN {
		t.Errorf("read of an empty socket: %v, want EAGAIN", err)
	}
}

func TestCheckHandshakeResponse(t *testing.T) {
	req := func(protocols ...string) *http.Request {
		// RFC 6455 §1.3's example key; the Upgrade and Connection values are as a browser may
		// write them.
		o := wsraw.Options{Key: "dGhlIHNhbXBsZSBub25jZQ==", Header: http.Header{
			"Upgrade":    {"WebSocket"},
			"Connection": {"keep-alive, Upgrade"},
		}}
		if len(protocols) > 0 {
			o.Header["Sec-Websocket-Protocol"] = protocols
		}
		r, err := wsraw.NewRequest("http://example.test/ws", o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	for _, tc := range []struct {
		name      string
		protocols []string
		want      string
	}{
		{"no subprotocol", nil, head + "\r\n"},
		{"bearer only: never echoed", []string{"bearer.abc.def.ghi"}, head + "\r\n"},
		{"service subprotocol", []string{session.Subprotocol + ", bearer.abc.def.ghi"}, head + "Sec-WebSocket-Protocol: " + session.Subprotocol + "\r\n\r\n"},
		{"second header line", []string{"bearer.x", " " + strings.ToUpper(session.Subprotocol) + " "}, head + "Sec-WebSocket-Protocol: " + session.Subprotocol + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, herr := checkHandshake(req(tc.protocols...))
			if herr != nil {
				t.Fatal(herr)
			}
			if string(got) != tc.want {
				t.Fatalf("response\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	r := req(session.Subprotocol)
	if n := testing.AllocsPerRun(100, func() { _, _ = checkHandshake(r) }); n > 1 {
		t.Errorf("checkHandshake allocates %.0f times per call, want only the response", n)
	}
}
