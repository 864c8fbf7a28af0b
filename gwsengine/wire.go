package gwsengine

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/telemetry"
)

// wire is the TCP (or TLS) connection under one gws socket. gws reads and writes through it;
// the engine adds what gws lacks:
//   - liveness: every successful read stamps lastRead, so any inbound byte, whether a data
//     frame, a fragment, a ping or a pong, keeps the connection alive;
//   - the lingering close: gws calls Close straight after writing a close frame, which would
//     reset a peer whose close frame is still in flight. Close only half-closes and bounds
//     further reads by closeGrace, so gws's read loop keeps going until the peer's close frame,
//     EOF or the deadline; the engine calls release once that loop has ended;
//   - the MESSAGE_TOO_LARGE ErrorMessage in front of gws's own 1009 close frame, and the
//     engine's reply in front of its own close frames (beforeClose), in the same write, so
//     that no queued frame comes between the two;
//   - the frame-length guard: gws v1.8.9 turns a 64-bit frame length into an int, so a length
//     with the top bit set becomes negative, passes its ReadMaxPayloadSize check and panics
//     its read loop (the whole process). Read follows the frame headers going by (frameScan)
//     and refuses a frame announcing more than maxPayload bytes before gws sees its length:
//     close 1009 with the ErrorMessage, as for gws's own 1009;
//   - the held 101: an accepted wire starts out holding its writes (gws writes the 101 inside
//     UpgradeFromConn) and the engine opens it once the connection is in its shard, so a
//     client cannot see the 101 before a delivery can reach it (DESIGN.md, "Subscribe before
//     open").
//
// gws calls Write with one whole frame at a time, under its socket mutex, so Write can look at
// the first bytes of a frame and no other frame can come between the two writes it makes.
type wire struct {
	net.Conn
	lastRead atomic.Int64 // unix nanoseconds of the last read that returned data
	closed   atomic.Bool  // Close was called: gws has given the socket up
	// tooLarge is the encoded text frame of the MESSAGE_TOO_LARGE ErrorMessage, shared by every
	// wire of an engine; metrics (nil in some tests) counts what a wire refuses.
	tooLarge []byte
	metrics  *telemetry.Metrics
	// beforeClose is an encoded text frame (an ErrorMessage) the next close frame written
	// carries in front of it; the engine sets it right before WriteClose.
	beforeClose atomic.Pointer[[]byte]

	// Read side, touched only by the goroutine running gws's read loop (socket is set before
	// that loop starts).
	socket     *gws.Conn
	maxPayload uint64
	frames     frameScan
	refused    bool // a frame was refused: every further Read fails
	born       time.Time
	readAt     int64 // monotonic nanoseconds since born at the last read: the inbound limits' clock
	closeSent  bool  // refuse has written its close frame (or found the socket closing)
	inbound          // an incomplete frame held back from gws, and its deadline (hold.go)

	// Held writes. state is wireDirect once open has run; until then Write appends to held.
	// mu orders open's flush against a Write or Close that comes meanwhile.
	state      atomic.Int32
	mu         sync.Mutex
	held       []byte // guarded by mu
	openErr    error  // guarded by mu; set when state is wireBroken
	closeAfter bool   // guarded by mu: Close came while holding; open half-closes after the flush
}

// States of a wire's write side.
const (
	wireDirect  int32 = iota // writes go to the socket
	wireHolding              // writes are kept in held until open
	wireBroken               // the flush failed: writes fail
)

// errFrameTooLarge ends gws's read loop once a frame was refused; by then the close frame is
// written and gws's own close state is set (see refuse).
var errFrameTooLarge = errors.New("gwsengine: frame length over the message size limit")

func newWire(c net.Conn, maxPayload int, hold bool, tooLarge []byte, metrics *telemetry.Metrics) *wire {
	w := &wire{Conn: c, maxPayload: uint64(maxPayload), tooLarge: tooLarge, metrics: metrics, born: time.Now()}
	w.lastRead.Store(w.born.UnixNano())
	if hold {
		w.state.Store(wireHolding)
	}
	return w
}

func (w *wire) Read(p []byte) (int, error) {
	if w.refused {
		w.refuse()
		return 0, errFrameTooLarge
	}
	if len(w.ready) > 0 {
		if w.drainFirst {
			w.drainFirst = false
			w.drain()
		}
		return w.serveReady(p), nil
	}
	for {
		buf := p
		if w.pend != nil {
			// Holding a frame: read no further than its end, so that what follows it goes
			// to gws the usual way.
			buf = p[:min(uint64(len(p)), w.frames.missing())]
		}
		n, err := w.Conn.Read(buf)
		if n > 0 {
			now := time.Now()
			w.lastRead.Store(now.UnixNano())
			w.readAt = int64(now.Sub(w.born))
			at := w.frames.scan(buf[:n], w.maxPayload)
			if w.frames.started > 0 && w.socket != nil {
				// Counted before gws parses the frames: over the rate, it answers none of them.
				if c := connOf(w.socket); c != nil {
					c.countFrames(w.frames.started, w.readAt)
				}
			}
			w.frames.started = 0
			if at >= 0 {
				// The refused frame's header never reaches gws; whole frames before it in
				// this read do, and the next Read refuses.
				w.pend, w.refused = nil, true
				if at > 0 {
					return at, nil
				}
				w.refuse()
				return 0, errFrameTooLarge
			}
			w.track()
			if at := w.frames.ending; at >= 0 && w.pend == nil {
				if at > 0 {
					// gws first gets the frames before it (their replies are queued), then,
					// once they are written, the frame that ends the connection.
					w.ready, w.drainFirst = append([]byte(nil), buf[at:n]...), true
					return at, nil
				}
				w.drain()
			}
			if k := w.keep(p, n); k > 0 {
				return k, nil
			}
		}
		if err != nil {
			return 0, w.readError(err)
		}
	}
}

// refuse closes the connection 1009 for a frame too large to read, from the read goroutine,
// the way gws closes for its own 1009: WriteClose stores the close code as the read loop's
// end (so OnClose sees 1009 and emitError adds no second close frame), Write puts the
// ErrorMessage in front of the close frame, and gws calls Close. A socket already closing
// (WriteClose fails) just ends.
func (w *wire) refuse() {
	if w.closeSent || w.socket == nil {
		return
	}
	w.closeSent = true
	w.closeBehindQueue(message.CloseMessageTooBig)
}

// closeBehindQueue writes a close frame with code from the read goroutine, behind the replies
// already queued for the connection (an echo of the frame before the one refused reaches the
// client first), and waits for it: WriteClose must have stored the code before the read loop
// ends. The write deadline bounds the wait for a peer that does not read.
func (w *wire) closeBehindQueue(code uint16) {
	_ = w.SetWriteDeadline(time.Now().Add(closeGrace))
	done := make(chan struct{})
	w.socket.Async(func() {
		defer close(done)
		_ = w.socket.WriteClose(code, nil)
	})
	<-done
}

func (w *wire) Write(p []byte) (int, error) {
	n := len(p)
	var reply *[]byte
	if w.beforeClose.Load() != nil && closeCodeOf(p) != 0 {
		if reply = w.beforeClose.Swap(nil); reply != nil {
			p = append(append(make([]byte, 0, len(*reply)+len(p)), *reply...), p...)
		}
	}
	if _, err := w.write(p); err != nil {
		return 0, err
	}
	if reply != nil && w.metrics != nil {
		w.metrics.MessagesSent.Inc()
	}
	return n, nil
}

// write is Write once the frames to write are known: held until open, else to the socket.
func (w *wire) write(p []byte) (int, error) {
	if w.state.Load() != wireDirect {
		w.mu.Lock()
		switch w.state.Load() {
		case wireHolding:
			w.held = append(w.held, p...)
			w.mu.Unlock()
			return len(p), nil
		case wireBroken:
			err := w.openErr
			w.mu.Unlock()
			return 0, err
		}
		w.mu.Unlock() // open ran meanwhile: its flush is written, this write goes after it
	}
	if closeCodeOf(p) == message.CloseMessageTooBig && w.tooLarge != nil {
		// Only gws's read loop and refuse send 1009 (the engine never does otherwise, and a
		// peer's 1009 is answered with 1000), so this is the oversized-message path.
		if _, err := w.Conn.Write(w.tooLarge); err == nil && w.metrics != nil {
			w.metrics.Dropped(telemetry.DropTooLarge, 1)
		}
	}
	return w.Conn.Write(p)
}

// open ends the holding: it writes what was held (the 101, then any frame queued since, in
// order) and switches to direct writes. Writes that come while it flushes wait for it. If the
// flush fails, writes fail from then on and the read side is woken, so that gws's read loop
// ends and the connection is released the usual way. Only the first call has an effect.
func (w *wire) open() error {
	w.mu.Lock()
	if w.state.Load() != wireHolding {
		w.mu.Unlock()
		return nil
	}
	var err error
	if len(w.held) > 0 {
		_, err = w.Conn.Write(w.held)
	}
	w.held = nil
	if err != nil {
		w.openErr = err
		w.state.Store(wireBroken)
	} else {
		w.state.Store(wireDirect)
	}
	if err == nil && w.closeAfter {
		w.closeWrite()
	}
	w.mu.Unlock()
	if err != nil {
		_ = w.Conn.SetReadDeadline(time.Now())
	}
	return err
}

// Close is what gws calls to drop the connection; see the type comment. While the wire holds
// its writes, the half-close waits for open, so the FIN follows the held bytes.
func (w *wire) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return nil
	}
	if w.state.Load() != wireDirect {
		w.mu.Lock()
		held := w.state.Load() == wireHolding
		w.closeAfter = held
		w.mu.Unlock()
		if held {
			return w.Conn.SetReadDeadline(time.Now().Add(closeGrace))
		}
	}
	w.closeWrite()
	return w.Conn.SetReadDeadline(time.Now().Add(closeGrace))
}

func (w *wire) closeWrite() {
	if hc, ok := w.Conn.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite() // the FIN follows our close frame; the peer may still answer
	}
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
	if len(p) < 4 || p[0] != rfc6455.FinBit|rfc6455.OpClose {
		return 0 // every other frame is told by its first byte
	}
	h, ok := rfc6455.ParseHeader(p)
	if !ok || h.Masked || h.Length < 2 || len(p) < h.Size+2 {
		return 0
	}
	return binary.BigEndian.Uint16(p[h.Size:])
}

// frameScan follows the frame boundaries of a client's byte stream without buffering it: the
// two header bytes, the 2 or 8 extended length bytes, then the mask key and payload, skipped.
// It allocates nothing and costs a few instructions per header; a payload is skipped whole.
type frameScan struct {
	started int // frame headers begun since the caller last reset it: the inbound rate counts frames
	state   uint8
	masked  bool
	ext     uint8  // extended length bytes still to come
	length  uint64 // the extended length read so far
	skip    uint64 // mask key and payload bytes still to come
	body    uint64 // mask key and payload bytes of the current frame, once its header is read
	// began is where in the last scanned p the last frame header began, or -1 if none did.
	began int
	// ending is where in the last scanned p the first frame that ends the connection (see
	// endsConnection) begins, 0 if it began in an earlier p, or -1 if none does.
	ending int
	first  byte // the first header byte of the frame being scanned
	frag   bool // a fragmented message is open
}

const (
	scanFirst  uint8 = iota // the next byte is FIN/RSV/opcode
	scanSecond              // the next byte is MASK and the length code
	scanLength              // extended length bytes
	scanSkip                // mask key and payload
)

// scan follows p and stops as soon as a frame announces a payload over max (a length of 2^63
// or more, which gws would turn into a negative int, included): it returns the offset in p
// where that frame's header starts, 0 if it started in an earlier p, or -1 if all is well.
func (f *frameScan) scan(p []byte, max uint64) int {
	start := 0 // where the header being read starts in p
	f.began, f.ending = -1, -1
	for i := 0; i < len(p); {
		switch f.state {
		case scanFirst:
			start, f.began = i, i
			f.first = p[i]
			f.started++
			f.state = scanSecond
			i++
		case scanSecond:
			b := p[i]
			i++
			if f.ending < 0 && f.endsConnection(b) {
				f.ending = start
			}
			f.masked = b&rfc6455.MaskBit != 0
			switch code := b & rfc6455.LenBits; code {
			case rfc6455.Len16:
				f.state, f.ext, f.length = scanLength, 2, 0
			case rfc6455.Len64:
				f.state, f.ext, f.length = scanLength, 8, 0
			default:
				f.begin(uint64(code))
			}
		case scanLength:
			f.length = f.length<<8 | uint64(p[i])
			i++
			if f.ext--; f.ext == 0 {
				if f.length > max {
					return start
				}
				f.begin(f.length)
			}
		case scanSkip:
			n := min(f.skip, uint64(len(p)-i))
			i += int(n)
			if f.skip -= n; f.skip == 0 {
				f.state = scanFirst
			}
		}
	}
	return -1
}

// endsConnection reports whether the frame whose header starts with f.first and second
// makes gws end the connection from its read goroutine, writing a close frame there: a close
// frame, or a header that breaks the protocol (reserved bits or opcodes, no mask, a fragmented
// or long control frame, a fragment out of place). It follows the open fragmented message.
func (f *frameScan) endsConnection(second byte) bool {
	op, fin := f.first&rfc6455.OpBits, f.first&rfc6455.FinBit != 0
	switch {
	case f.first&rfc6455.RSVBits != 0, second&rfc6455.MaskBit == 0, !rfc6455.KnownOpcode(op):
		return true
	case rfc6455.IsControl(op):
		return op == rfc6455.OpClose || !fin || second&rfc6455.LenBits > rfc6455.MaxControlPayload
	case op == rfc6455.OpContinuation:
		if !f.frag {
			return true
		}
		f.frag = !fin
	default:
		if f.frag {
			return true
		}
		f.frag = !fin
	}
	return false
}

// begin skips the mask key, if any, and a payload of n bytes.
func (f *frameScan) begin(n uint64) {
	if f.masked {
		n += 4
	}
	f.skip, f.body, f.state = n, n, scanSkip
	if n == 0 {
		f.state = scanFirst
	}
}
