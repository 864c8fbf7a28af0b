// Package wsraw is the one raw WebSocket client of the tests: it dials and upgrades with any
// header (or a handshake broken on purpose), writes client frames of any shape, malformed ones
// included, and reads the server's frames as they are on the wire. It is for tests that need
// bytes a WebSocket library will not produce or hide; the high-level client for everything
// else is internal/servicetest's. The wire format itself is internal/rfc6455's.
package wsraw

import (
	"crypto/rand"
	"fmt"

	"github.com/huleedu/websocket-service/internal/rfc6455"
)

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
	// Key is the masking key; a random one when zero.
	Key [4]byte
}

// Encode returns the frame's bytes.
func (f Frame) Encode() []byte {
	return f.AppendTo(make([]byte, 0, rfc6455.MaxClientHeader+len(f.Payload)))
}

// AppendTo appends the frame's bytes to dst.
func (f Frame) AppendTo(dst []byte) []byte {
	n := uint64(len(f.Payload))
	if f.Length != 0 {
		n = f.Length
	}
	b0 := f.Op&rfc6455.OpBits | (f.RSV&0x7)<<4
	if !f.More {
		b0 |= rfc6455.FinBit
	}
	dst = rfc6455.AppendHeader(dst, b0, n, !f.Unmasked)
	if f.Unmasked {
		return append(dst, f.Payload...)
	}
	key := f.Key
	if key == [4]byte{} {
		_, _ = rand.Read(key[:])
	}
	return rfc6455.AppendMasked(dst, f.Payload, key)
}

// Text is a final text frame.
func Text(s string) Frame { return Frame{Op: rfc6455.OpText, Payload: []byte(s)} }

// Binary is a final binary frame.
func Binary(b []byte) Frame { return Frame{Op: rfc6455.OpBinary, Payload: b} }

// Ping is a ping frame with payload.
func Ping(s string) Frame { return Frame{Op: rfc6455.OpPing, Payload: []byte(s)} }

// Close is a close frame carrying code and reason (any code, even one no peer may send);
// Frame{Op: rfc6455.OpClose} is one with an empty body.
func Close(code uint16, reason string) Frame {
	return Frame{Op: rfc6455.OpClose, Payload: rfc6455.CloseBody(code, reason)}
}

// Encode concatenates the frames' bytes, for one write.
func Encode(frames ...Frame) []byte {
	var b []byte
	for _, f := range frames {
		b = f.AppendTo(b)
	}
	return b
}

// ServerFrame is one frame as the server sent it.
type ServerFrame struct {
	Fin     bool
	Op      byte
	Payload []byte
}

// CloseCode is the status code of a close frame (1005 when it carries none).
func (f ServerFrame) CloseCode() uint16 {
	if len(f.Payload) < 2 {
		return rfc6455.CloseNoStatus
	}
	code, _, _ := rfc6455.ParseCloseBody(f.Payload)
	return code
}

// CloseReason is the reason a close frame carries.
func (f ServerFrame) CloseReason() string {
	if len(f.Payload) < 2 {
		return ""
	}
	return string(f.Payload[2:])
}

// Violation is a frame no server may send; ReadFrame stops at it.
type Violation struct{ What string }

func (v *Violation) Error() string { return "server sent " + v.What }

func violation(format string, args ...any) error {
	return &Violation{What: fmt.Sprintf(format, args...)}
}
