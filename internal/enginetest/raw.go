package enginetest

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/message"
)

// Opcodes (RFC 6455 §5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Raw is a WebSocket client written against the socket, for what client libraries will not
// do: send malformed frames, never read, never answer a ping, vanish without a close frame.
type Raw struct {
	t    testing.TB
	Conn net.Conn
	Resp *http.Response
	br   *bufio.Reader
}

// RawOptions adjust DialRaw.
type RawOptions struct {
	Header        http.Header
	Extra         []byte // sent in the same write as the upgrade request
	ReceiveBuffer int    // SO_RCVBUF when positive: a client that never reads fills it soon
}

// DialRaw sends the upgrade request for path (query included) to addr and reads the response
// head; the connection is closed when the test ends.
func DialRaw(t testing.TB, addr, path string, o RawOptions) *Raw {
	t.Helper()
	d := net.Dialer{}
	if o.ReceiveBuffer > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			if cerr := rc.Control(func(fd uintptr) { err = setRecvBuffer(fd, o.ReceiveBuffer) }); cerr != nil {
				return cerr
			}
			return err
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, addr)
	fmt.Fprintf(&b, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n", base64.StdEncoding.EncodeToString(key))
	for k, vs := range o.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := nc.Write(append([]byte(b.String()), o.Extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	_ = nc.SetReadDeadline(time.Now().Add(Wait))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Raw{t: t, Conn: nc, Resp: resp, br: br}
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
	if c.Resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade for %s: %s", user, c.Resp.Status)
	}
	return c
}

// Frame encodes a client frame: rsv is the RSV bits (0-7), masked with a fixed key or not.
func Frame(fin bool, rsv, op byte, payload []byte, masked bool) []byte {
	b0 := rsv<<4 | op
	if fin {
		b0 |= 0x80
	}
	var maskBit byte
	if masked {
		maskBit = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, maskBit|byte(n))
	case n <= 0xFFFF:
		out = binary.BigEndian.AppendUint16(append(out, maskBit|126), uint16(n))
	default:
		out = binary.BigEndian.AppendUint64(append(out, maskBit|127), uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
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

// ServerFrame is one frame the server sent.
type ServerFrame struct {
	Fin     bool
	Op      byte
	Payload []byte
}

// ReadFrame reads one server frame (which must be unmasked) within d.
func (c *Raw) ReadFrame(d time.Duration) (ServerFrame, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return ServerFrame{}, err
	}
	if hdr[1]&0x80 != 0 {
		return ServerFrame{}, errors.New("server frame is masked")
	}
	n := uint64(hdr[1] & 0x7F)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return ServerFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return ServerFrame{}, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return ServerFrame{}, err
	}
	return ServerFrame{Fin: hdr[0]&0x80 != 0, Op: hdr[0] & 0x0F, Payload: p}, nil
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
			if len(f.Payload) < 2 {
				return message.CloseNoStatus, before
			}
			return binary.BigEndian.Uint16(f.Payload), before
		}
		before = append(before, f)
	}
}

// ExpectEOF waits for the server to end the TCP connection, discarding what arrives.
func (c *Raw) ExpectEOF(d time.Duration) {
	c.t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	if _, err := io.Copy(io.Discard, c.br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("the server did not end the connection within %v", d)
		}
	}
}
