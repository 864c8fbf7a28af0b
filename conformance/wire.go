package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/wsraw"
)

// Opcodes of RFC 6455 §5.2.
const (
	OpContinuation = rfc6455.OpContinuation
	OpText         = rfc6455.OpText
	OpBinary       = rfc6455.OpBinary
	OpClose        = rfc6455.OpClose
	OpPing         = rfc6455.OpPing
	OpPong         = rfc6455.OpPong
)

// maxServerMessage bounds what the reader reassembles, and a frame, so a misbehaving server
// cannot make the test process allocate without limit.
const maxServerMessage = 32 << 20

// Frame is one frame as a client puts it on the wire (internal/wsraw).
type Frame = wsraw.Frame

// Text is a final text frame.
func Text(s string) Frame { return wsraw.Text(s) }

// Binary is a final binary frame.
func Binary(b []byte) Frame { return wsraw.Binary(b) }

// Ping is a ping frame with payload.
func Ping(s string) Frame { return wsraw.Ping(s) }

// Close is a close frame carrying code and reason (any code, even an invalid one).
func Close(code uint16, reason string) Frame { return wsraw.Close(code, reason) }

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

// Conn is a raw client connection after a successful handshake, whose reader turns the
// server's frames into Events.
type Conn struct {
	ws     *wsraw.Conn
	events chan Event
}

// HandshakeError is an upgrade the server refused with an HTTP status.
type HandshakeError = wsraw.HandshakeError

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
	ws, err := wsraw.Dial(addr, requestURI, wsraw.Options{Header: o.Header, Timeout: o.Timeout, Dialer: o.Dialer, MaxFrame: maxServerMessage})
	if err != nil {
		return nil, err
	}
	if err := ws.Upgraded(); err != nil {
		ws.Close()
		return nil, err
	}
	return &Conn{ws: ws, events: make(chan Event, 4096)}, nil
}

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.ws.Conn }

// Close drops the TCP connection without a closing handshake.
func (c *Conn) Close() error { return c.ws.Close() }

// Write puts raw bytes on the wire.
func (c *Conn) Write(b []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.ws.Write(b)
	return err
}

// Send writes frames back to back in one write.
func (c *Conn) Send(frames ...Frame) error { return c.Write(wsraw.Encode(frames...)) }

// SendChopped writes frames as one byte stream in writes of chop bytes, pausing pause between
// writes, so the server sees headers and payloads split at arbitrary points.
func (c *Conn) SendChopped(chop int, pause time.Duration, frames ...Frame) error {
	b := wsraw.Encode(frames...)
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
		f, err := c.ws.ReadFrame(time.Time{})
		if err != nil {
			var bad *wsraw.Violation
			if errors.As(err, &bad) {
				emit(Event{Kind: EventBad, Err: err})
				_ = c.ws.Close()
				_, err = c.ws.Read(make([]byte, 1))
			}
			emit(Event{Kind: EventEOF, Err: err})
			return
		}
		switch f.Op {
		case OpPing:
			emit(Event{Kind: EventPing, Data: f.Payload})
		case OpPong:
			emit(Event{Kind: EventPong, Data: f.Payload})
		case OpClose:
			if len(f.Payload) == 1 {
				emit(Event{Kind: EventBad, Err: &wsraw.Violation{What: "close frame with a 1-byte body"}})
			}
			emit(Event{Kind: EventClose, Code: f.CloseCode(), Reason: f.CloseReason()})
		case OpText, OpBinary:
			if msgOp != 0 {
				emit(Event{Kind: EventBad, Err: &wsraw.Violation{What: "new data frame inside a fragmented message"}})
			}
			msg, msgOp = f.Payload, f.Op
		case OpContinuation:
			if msgOp == 0 {
				emit(Event{Kind: EventBad, Err: &wsraw.Violation{What: "continuation frame with nothing to continue"}})
				continue
			}
			if len(msg)+len(f.Payload) > maxServerMessage {
				emit(Event{Kind: EventBad, Err: &wsraw.Violation{What: "server message over the reader's limit"}})
				_ = c.ws.Close()
				emit(Event{Kind: EventEOF, Err: io.ErrUnexpectedEOF})
				return
			}
			msg = append(msg, f.Payload...)
		default:
			emit(Event{Kind: EventBad, Err: &wsraw.Violation{What: fmt.Sprintf("reserved opcode %#x", f.Op)}})
			continue
		}
		if (f.Op == OpText || f.Op == OpBinary || f.Op == OpContinuation) && f.Fin {
			if msgOp == OpText && !utf8.Valid(msg) {
				emit(Event{Kind: EventBad, Err: &wsraw.Violation{What: "text message that is not UTF-8"}})
			}
			emit(Event{Kind: EventMessage, Op: msgOp, Data: msg})
			msg, msgOp = nil, 0
		}
	}
}
