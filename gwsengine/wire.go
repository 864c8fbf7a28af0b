package gwsengine

import (
	"encoding/binary"
	"net"
	"sync/atomic"
	"time"

	"github.com/huleedu/websocket-service/message"
)

// wire is the TCP (or TLS) connection under one gws socket. gws reads and writes through it;
// the engine adds three things gws lacks:
//   - liveness: every successful read stamps lastRead, so any inbound byte, whether a data
//     frame, a fragment, a ping or a pong, keeps the connection alive;
//   - the lingering close: gws calls Close straight after writing a close frame, which would
//     reset a peer whose close frame is still in flight. Close only half-closes and bounds
//     further reads by closeGrace, so gws's read loop keeps going until the peer's close frame,
//     EOF or the deadline; the engine calls release once that loop has ended;
//   - the MESSAGE_TOO_LARGE ErrorMessage in front of gws's own 1009 close frame.
//
// gws calls Write with one whole frame at a time, under its socket mutex, so Write can look at
// the first bytes of a frame and no other frame can come between the two writes it makes.
type wire struct {
	net.Conn
	lastRead atomic.Int64 // unix nanoseconds of the last read that returned data
	closed   atomic.Bool  // Close was called: gws has given the socket up
	// tooLarge is the encoded text frame of the MESSAGE_TOO_LARGE ErrorMessage, shared by every
	// wire of an engine; onTooLarge counts the message that was refused.
	tooLarge   []byte
	onTooLarge func()
}

func newWire(c net.Conn, tooLarge []byte, onTooLarge func()) *wire {
	w := &wire{Conn: c, tooLarge: tooLarge, onTooLarge: onTooLarge}
	w.lastRead.Store(time.Now().UnixNano())
	return w
}

func (w *wire) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (w *wire) Write(p []byte) (int, error) {
	if closeCodeOf(p) == message.CloseMessageTooBig && w.tooLarge != nil {
		// Only gws's read loop sends 1009 (the engine never does, and a peer's 1009 is
		// answered with 1000), so this is the oversized-message path.
		if _, err := w.Conn.Write(w.tooLarge); err == nil && w.onTooLarge != nil {
			w.onTooLarge()
		}
	}
	return w.Conn.Write(p)
}

// Close is what gws calls to drop the connection; see the type comment.
func (w *wire) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return nil
	}
	if hc, ok := w.Conn.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite() // the FIN follows our close frame; the peer may still answer
	}
	return w.Conn.SetReadDeadline(time.Now().Add(closeGrace))
}

// release closes the socket for real. Only the engine calls it, once gws's read loop (or the
// rejection) is done with the wire.
func (w *wire) release() error { return w.Conn.Close() }

// linger reads and discards what the peer still sends until it closes or the deadline set by
// Close passes, so that our close frame is not destroyed by a reset when the socket is
// released with unread data in its receive buffer.
func (w *wire) linger() {
	var buf [512]byte
	for {
		if _, err := w.Conn.Read(buf[:]); err != nil {
			return
		}
	}
}

// closeCodeOf returns the status code of a server (unmasked) close frame starting at p, or 0
// when p does not start one.
func closeCodeOf(p []byte) uint16 {
	const finClose = 0x80 | 0x8
	if len(p) < 4 || p[0] != finClose || p[1]&0x7f < 2 || p[1]&0x80 != 0 {
		return 0
	}
	return binary.BigEndian.Uint16(p[2:4])
}

// textFrame encodes payload as one unmasked, final text frame, as a server sends it.
func textFrame(payload []byte) []byte {
	n := len(payload)
	var hdr []byte
	switch {
	case n < 126:
		hdr = []byte{0x81, byte(n)}
	case n <= 0xffff:
		hdr = []byte{0x81, 126, byte(n >> 8), byte(n)}
	default:
		hdr = make([]byte, 10)
		hdr[0], hdr[1] = 0x81, 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
	}
	return append(hdr, payload...)
}
