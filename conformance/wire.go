package conformance

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Opcodes of RFC 6455 §5.2.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// maxServerMessage bounds what the reader reassembles, so a misbehaving server cannot make
// the test process allocate without limit.
const maxServerMessage = 32 << 20

// Frame is one frame as a client puts it on the wire. The zero value of every field is what a
// well-behaved client sends, so a test names only what it breaks.
type Frame struct {
	Op      byte
	Payload []byte
	More    bool // FIN clear: more fragments of this message follow
	RSV     byte // the three reserved bits, as a value 0-7
	// Unmasked sends the payload without a masking key (servers must fail that, RFC 6455 §5.1).
	Unmasked bool
	// Length, when non-zero, is written as the payload length instead of len(Payload): for
	// headers that announce more than is sent.
	Length uint64
}

// Encode returns the frame's bytes, masked with a random key unless Unmasked.
func (f Frame) Encode() []byte {
	n := uint64(len(f.Payload))
	if f.Length != 0 {
		n = f.Length
	}
	b := make([]byte, 0, 14+len(f.Payload))
	b0 := f.Op & 0x0F
	if !f.More {
		b0 |= 0x80
	}
	b0 |= (f.RSV & 0x7) << 4
	b = append(b, b0)
	var maskBit byte = 0x80
	if f.Unmasked {
		maskBit = 0
	}
	switch {
	case n <= 125:
		b = append(b, maskBit|byte(n))
	case n <= 0xFFFF:
		b = append(b, maskBit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, maskBit|127)
		b = binary.BigEndian.AppendUint64(b, n)
	}
	if f.Unmasked {
		return append(b, f.Payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range f.Payload {
		b = append(b, c^key[i&3])
	}
	return b
}

// Text is a final text frame.
func Text(s string) Frame { return Frame{Op: OpText, Payload: []byte(s)} }

// Binary is a final binary frame.
func Binary(b []byte) Frame { return Frame{Op: OpBinary, Payload: b} }

// Ping is a ping frame with payload.
func Ping(s string) Frame { return Frame{Op: OpPing, Payload: []byte(s)} }

// Close is a close frame carrying code and reason (any code, even an invalid one).
func Close(code uint16, reason string) Frame {
	return Frame{Op: OpClose, Payload: append(binary.BigEndian.AppendUint16(nil, code), reason...)}
}

// EventKind says what the reader saw.
type EventKind int

// What a Conn's reader reports, in arrival order.
const (
	EventMessage EventKind = iota + 1 // a whole (reassembled) text or binary message
	EventPing
	EventPong
	EventClose
	EventEOF // the server closed TCP (or the read failed); always the last event
	EventBad // the server broke the protocol (masked frame, reserved bits, bad opcode...)
)

func (k EventKind) String() string {
	switch k {
	case EventMessage:
		return "message"
	case EventPing:
		return "ping"
	case EventPong:
		return "pong"
	case EventClose:
		return "close"
	case EventEOF:
		return "eof"
	case EventBad:
		return "server-protocol-violation"
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one thing the server sent.
type Event struct {
	Kind   EventKind
	Op     byte   // OpText or OpBinary for a message
	Data   []byte // message, ping or pong payload
	Code   uint16 // close code; 1005 for an empty close body
	Reason string // close reason
	Err    error  // for EventEOF and EventBad
	At     time.Time
}

// String renders the event for test logs, shortening long payloads.
func (e Event) String() string {
	switch e.Kind {
	case EventMessage:
		kind := "text"
		if e.Op == OpBinary {
			kind = "binary"
		}
		return fmt.Sprintf("%s(%s)", kind, short(e.Data))
	case EventPing, EventPong:
		return fmt.Sprintf("%s(%s)", e.Kind, short(e.Data))
	case EventClose:
		return fmt.Sprintf("close(%d %q)", e.Code, e.Reason)
	case EventEOF, EventBad:
		return fmt.Sprintf("%s(%v)", e.Kind, e.Err)
	}
	return e.Kind.String()
}

func short(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q…[%d bytes]", b[:32], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// Conn is a raw client connection after a successful handshake.
type Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	events chan Event
}

// HandshakeError is an upgrade the server refused with an HTTP status.
type HandshakeError struct {
	Status int
	Body   string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("handshake refused: HTTP %d %s", e.Status, strings.TrimSpace(e.Body))
}

// DialOptions adjust Dial.
type DialOptions struct {
	Header  http.Header   // extra request headers (Origin, Sec-WebSocket-Protocol...)
	Timeout time.Duration // for connect and handshake; 5 s when zero
	// Dialer, when set, makes the TCP connection (e.g. with a small receive buffer).
	Dialer *net.Dialer
}

// Dial connects to addr (host:port), upgrades requestURI (e.g. "/ws?token=…") and returns the
// connection without reading from it: call StartReading to receive events. A refused upgrade
// returns a *HandshakeError.
func Dial(addr, requestURI string, o DialOptions) (*Conn, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	var d net.Dialer
	if o.Dialer != nil {
		d = *o.Dialer
	}
	d.Timeout = timeout
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c, err := Upgrade(nc, addr, requestURI, o.Header, timeout)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Upgrade performs the client handshake on an open connection.
func Upgrade(nc net.Conn, host, requestURI string, header http.Header, timeout time.Duration) (*Conn, error) {
	var keyBytes [16]byte
	_, _ = rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", requestURI, host)
	fmt.Fprintf(&req, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(nc, req.String()); err != nil {
		return nil, fmt.Errorf("write upgrade request: %w", err)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("read upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, &HandshakeError{Status: resp.StatusCode, Body: string(body)}
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(h[:]); got != want {
		return nil, fmt.Errorf("Sec-WebSocket-Accept %q, want %q", got, want)
	}
	_ = nc.SetDeadline(time.Time{})
	return &Conn{nc: nc, br: br, events: make(chan Event, 4096)}, nil
}

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close drops the TCP connection without a closing handshake.
func (c *Conn) Close() error { return c.nc.Close() }

// Write puts raw bytes on the wire.
func (c *Conn) Write(b []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// Send writes frames back to back in one write.
func (c *Conn) Send(frames ...Frame) error {
	var b []byte
	for _, f := range frames {
		b = append(b, f.Encode()...)
	}
	return c.Write(b)
}

// SendChopped writes frames as one byte stream in writes of chop bytes, pausing pause between
// writes, so the server sees headers and payloads split at arbitrary points.
func (c *Conn) SendChopped(chop int, pause time.Duration, frames ...Frame) error {
	var b []byte
	for _, f := range frames {
		b = append(b, f.Encode()...)
	}
	for len(b) > 0 {
		n := min(chop, len(b))
		if err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if pause > 0 && len(b) > 0 {
			time.Sleep(pause)
		}
	}
	return nil
}

// StartReading starts the goroutine that decodes the server's frames into Events. It stops
// after EventEOF, which it always sends last.
func (c *Conn) StartReading() {
	go c.readLoop()
}

// Next returns the next event, or false when none arrives within timeout.
func (c *Conn) Next(timeout time.Duration) (Event, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case e := <-c.events:
		return e, true
	case <-t.C:
		return Event{}, false
	}
}

// NextData returns the next event that is not a server ping (pings are answered by no one
// here; the server's heartbeat interval is far longer than any test).
func (c *Conn) NextData(timeout time.Duration) (Event, bool) {
	deadline := time.Now().Add(timeout)
	for {
		e, ok := c.Next(time.Until(deadline))
		if !ok || e.Kind != EventPing {
			return e, ok
		}
	}
}

func (c *Conn) readLoop() {
	var msg []byte
	var msgOp byte
	emit := func(e Event) {
		e.At = time.Now()
		c.events <- e
	}
	for {
		f, err := c.readFrame()
		if err != nil {
			var bad *serverViolation
			if errors.As(err, &bad) {
				emit(Event{Kind: EventBad, Err: err})
				_ = c.nc.Close()
				_, err = c.br.ReadByte()
			}
			emit(Event{Kind: EventEOF, Err: err})
			return
		}
		switch f.op {
		case OpPing:
			emit(Event{Kind: EventPing, Data: f.payload})
		case OpPong:
			emit(Event{Kind: EventPong, Data: f.payload})
		case OpClose:
			e := Event{Kind: EventClose, Code: 1005}
			if len(f.payload) >= 2 {
				e.Code = binary.BigEndian.Uint16(f.payload)
				e.Reason = string(f.payload[2:])
			} else if len(f.payload) == 1 {
				emit(Event{Kind: EventBad, Err: &serverViolation{"close frame with a 1-byte body"}})
			}
			emit(e)
		case OpText, OpBinary:
			if msgOp != 0 {
				emit(Event{Kind: EventBad, Err: &serverViolation{"new data frame inside a fragmented message"}})
			}
			msg, msgOp = f.payload, f.op
		case OpContinuation:
			if msgOp == 0 {
				emit(Event{Kind: EventBad, Err: &serverViolation{"continuation frame with nothing to continue"}})
				continue
			}
			if len(msg)+len(f.payload) > maxServerMessage {
				emit(Event{Kind: EventBad, Err: &serverViolation{"server message over the reader's limit"}})
				_ = c.nc.Close()
				emit(Event{Kind: EventEOF, Err: io.ErrUnexpectedEOF})
				return
			}
			msg = append(msg, f.payload...)
		default:
			emit(Event{Kind: EventBad, Err: &serverViolation{fmt.Sprintf("reserved opcode %#x", f.op)}})
			continue
		}
		if (f.op == OpText || f.op == OpBinary || f.op == OpContinuation) && f.fin {
			if msgOp == OpText && !utf8.Valid(msg) {
				emit(Event{Kind: EventBad, Err: &serverViolation{"text message that is not UTF-8"}})
			}
			emit(Event{Kind: EventMessage, Op: msgOp, Data: msg})
			msg, msgOp = nil, 0
		}
	}
}

// serverViolation is a frame no server may send.
type serverViolation struct{ what string }

func (v *serverViolation) Error() string { return "server sent " + v.what }

// serverFrame is one frame as the server sent it.
type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

func (c *Conn) readFrame() (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	f := serverFrame{fin: h[0]&0x80 != 0, op: h[0] & 0x0F}
	if h[0]&0x70 != 0 {
		return f, &serverViolation{"reserved bits set"}
	}
	if h[1]&0x80 != 0 {
		return f, &serverViolation{"a masked frame"}
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if f.op >= OpClose && (n > 125 || !f.fin) {
		return f, &serverViolation{"a fragmented or oversized control frame"}
	}
	if n > maxServerMessage {
		return f, &serverViolation{fmt.Sprintf("a frame of %d bytes", n)}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, f.payload); err != nil {
		return f, err
	}
	return f, nil
}
