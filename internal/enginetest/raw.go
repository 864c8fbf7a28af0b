package enginetest

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/wsraw"
)

// Opcodes (RFC 6455 §5.2).
const (
	OpContinuation = rfc6455.OpContinuation
	OpText         = rfc6455.OpText
	OpBinary       = rfc6455.OpBinary
	OpClose        = rfc6455.OpClose
	OpPing         = rfc6455.OpPing
	OpPong         = rfc6455.OpPong
)

// Raw is an internal/wsraw client bound to a test: for what client libraries will not do
// (send malformed frames, never read, never answer a ping, vanish without a close frame), with
// every failure failing the test.
type Raw struct {
	t    testing.TB
	Conn *wsraw.Conn
	Resp *http.Response
}

// RawOptions adjust DialRaw.
type RawOptions struct {
	Header        http.Header
	Extra         []byte // sent in the same write as the upgrade request
	ReceiveBuffer int    // SO_RCVBUF when positive: a client that never reads fills it soon
}

// ServerFrame is one frame the server sent.
type ServerFrame = wsraw.ServerFrame

// DialRaw sends the upgrade request for path (query included) to addr and reads the response
// head; the connection is closed when the test ends.
func DialRaw(t testing.TB, addr, path string, o RawOptions) *Raw {
	t.Helper()
	c, err := wsraw.Dial(addr, path, wsraw.Options{Header: o.Header, Extra: o.Extra, ReceiveBuffer: o.ReceiveBuffer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &Raw{t: t, Conn: c, Resp: c.Response}
}

// DialRaw connects a raw client for user with groups and an hour's token.
func (r *Rig) DialRaw(t testing.TB, user string, groups ...string) *Raw {
	t.Helper()
	return r.DialRawWith(t, user, RawOptions{}, groups...)
}

// DialRawWith is DialRaw with options.
func (r *Rig) DialRawWith(t testing.TB, user string, o RawOptions, groups ...string) *Raw {
	t.Helper()
	c := DialRaw(t, r.Addr, "/ws?token="+r.Token(user, time.Hour, groups...), o)
	if err := c.Conn.Upgraded(); err != nil {
		t.Fatalf("upgrade for %s: %v", user, err)
	}
	return c
}

// Frame encodes a client frame: rsv is the RSV bits (0-7), masked or not.
func Frame(fin bool, rsv, op byte, payload []byte, masked bool) []byte {
	return wsraw.Frame{Op: op, Payload: payload, More: !fin, RSV: rsv, Unmasked: !masked}.Encode()
}

// Msg is a final masked client frame of op carrying text.
func Msg(op byte, text string) []byte { return Frame(true, 0, op, []byte(text), true) }

// Send writes bytes (frames) to the server.
func (c *Raw) Send(frames ...[]byte) {
	c.t.Helper()
	for _, f := range frames {
		if _, err := c.Conn.Write(f); err != nil {
			c.t.Fatalf("write: %v", err)
		}
	}
}

// ReadFrame reads one server frame within d.
func (c *Raw) ReadFrame(d time.Duration) (ServerFrame, error) {
	return c.Conn.ReadFrame(time.Now().Add(d))
}

// Next reads frames, skipping server pings, until one arrives; it fails the test on error.
func (c *Raw) Next(d time.Duration) ServerFrame {
	c.t.Helper()
	for {
		f, err := c.ReadFrame(d)
		if err != nil {
			c.t.Fatalf("read frame: %v", err)
		}
		if f.Op != OpPing {
			return f
		}
	}
}

// UntilClose reads until a close frame and returns its code (1005 for an empty one) and the
// other frames before it, server pings left out.
func (c *Raw) UntilClose(d time.Duration) (code uint16, before []ServerFrame) {
	c.t.Helper()
	for {
		f := c.Next(d)
		if f.Op == OpClose {
			return f.CloseCode(), before
		}
		before = append(before, f)
	}
}

// ExpectEOF waits for the server to end the TCP connection, discarding what arrives.
func (c *Raw) ExpectEOF(d time.Duration) {
	c.t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	if _, err := io.Copy(io.Discard, c.Conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("the server did not end the connection within %v", d)
		}
	}
}
