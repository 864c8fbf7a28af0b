//go:build linux

package eventloop

import (
	"unicode/utf8"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/message"
)

// frameHandler receives what the parser completes, with the connection that sent it. A payload
// is valid only during the call: it points into the shard's read buffer or the connection's
// partial buffer, so a handler that keeps it must copy it. Returning false stops parsing (the
// connection is closing); the rest of the input is discarded.
type frameHandler interface {
	// onFrame is told of every complete frame, a fragment or control frame included, before
	// its payload is handed on: the inbound rate counts frames.
	onFrame(c *conn)
	// onMessage gets a whole text (already valid UTF-8) or binary message.
	onMessage(c *conn, op byte, payload []byte) bool
	// onControl gets a ping, pong or close frame.
	onControl(c *conn, op byte, payload []byte) bool
}

// parser is an incremental RFC 6455 frame parser for one connection: it takes bytes as the
// socket yields them and holds, between reads, only what an incomplete frame or fragmented
// message needs. An idle connection's parser is one nil pointer. Like the connection that
// embeds it, it is touched only by the connection's loop goroutine.
type parser struct {
	rx *partial
}

// partial is what a connection holds between reads while a frame or a fragmented message is
// incomplete. It is released as soon as neither is pending.
type partial struct {
	pend  []byte // raw (masked) bytes of an incomplete frame so far; grows as they arrive
	msg   []byte // unmasked payload of the fragmented message so far
	msgOp byte   // opText or opBinary while a fragmented message is open, else 0
	valid int    // for text: msg[:valid] is known to be whole, valid UTF-8 runes
	begun bool   // pend's frame began in the last feed (see begun)
	// by is when pend's frame must be complete, in the loop's ticks (session.FrameTimeout,
	// plus session.FrameTime once sized): kept here, so an idle connection pays nothing for it.
	by    uint32
	sized bool // by includes the time pend's announced length allows
}

// header is a decoded client frame header.
type header struct {
	fin    bool
	op     byte
	mask   [4]byte
	length int // payload bytes; never more than the message limit allows
	size   int // header bytes; 0 while the header is incomplete
}

// feed parses data, which c sent, handing every complete message and control frame to h with
// c (the parser passes c on and never looks at it). limit is the largest message accepted. It
// returns 0, or the close code the connection must fail with: 1002 for a protocol violation,
// 1007 for text that is not UTF-8, 1009 for a message over limit. data may be modified
// (payloads are unmasked in place).
func (p *parser) feed(data []byte, limit int, h frameHandler, c *conn) uint16 {
	for len(data) > 0 {
		if p.rx != nil && p.rx.pend != nil {
			rest, done, code := p.fill(data, limit)
			if code != 0 {
				return code
			}
			if !done {
				return 0
			}
			data = rest
			frame := p.rx.pend
			p.rx.pend = nil
			hd, _ := p.parseHeader(frame, limit) // validated by fill
			code, more := p.dispatch(hd, frame[hd.size:], h, c)
			if code != 0 || !more {
				return code
			}
			continue
		}
		hd, code := p.parseHeader(data, limit)
		if code != 0 {
			return code
		}
		if hd.size == 0 || len(data) < hd.size+hd.length {
			p.hold(data)
			return 0
		}
		frame := data[:hd.size+hd.length]
		data = data[len(frame):]
		code, more := p.dispatch(hd, frame[hd.size:], h, c)
		if code != 0 || !more {
			return code
		}
	}
	return 0
}

// hold keeps the bytes of an incomplete frame, in a buffer of their size: a header is a
// claim, not a fact, so a client that announces a megabyte and sends nothing more costs the
// few bytes it sent (fill grows the buffer as the rest arrives).
func (p *parser) hold(data []byte) {
	rx := p.partial()
	rx.pend = append(make([]byte, 0, len(data)), data...)
	rx.begun, rx.by, rx.sized = true, 0, false
}

// fill tops up the pending frame from data. It returns the unused rest of data, whether the
// frame is now complete, and a close code if its header breaks a rule.
func (p *parser) fill(data []byte, limit int) (rest []byte, done bool, code uint16) {
	pend := p.rx.pend
	hd, code := p.parseHeader(pend, limit)
	for code == 0 && hd.size == 0 {
		if len(data) == 0 {
			p.rx.pend = pend
			return data, false, 0
		}
		n := min(rfc6455.HeaderSize(pend)-len(pend), len(data))
		pend = append(pend, data[:n]...)
		data = data[n:]
		hd, code = p.parseHeader(pend, limit)
	}
	if code != 0 {
		return nil, false, code
	}
	total := hd.size + hd.length
	n := min(total-len(pend), len(data))
	pend = grow(pend, n, total)
	pend = append(pend, data[:n]...)
	p.rx.pend = pend
	return data[n:], len(pend) == total, 0
}

// grow makes room for n more bytes in pend, doubling its capacity at most (so what is held
// stays within twice what arrived) and never past total, the frame's size.
func grow(pend []byte, n, total int) []byte {
	need := len(pend) + n
	if need <= cap(pend) {
		return pend
	}
	grown := make([]byte, len(pend), min(max(need, 2*cap(pend)), total))
	copy(grown, pend)
	return grown
}

// parseHeader decodes the frame header at the start of b. Every rule the available bytes can
// already show broken is reported, even before the header is complete; size stays 0 until it
// is. The length is checked against limit from the header alone, before any payload is
// buffered, so a frame announcing 2^63 bytes costs nothing.
func (p *parser) parseHeader(b []byte, limit int) (hd header, code uint16) {
	if len(b) == 0 {
		return hd, 0
	}
	hd.fin = b[0]&rfc6455.FinBit != 0
	hd.op = b[0] & rfc6455.OpBits
	if b[0]&rfc6455.RSVBits != 0 { // RSV1-3 without a negotiated extension
		return hd, message.CloseProtocolError
	}
	var open byte
	if p.rx != nil {
		open = p.rx.msgOp
	}
	switch hd.op {
	case opContinuation:
		if open == 0 {
			return hd, message.CloseProtocolError
		}
	case opText, opBinary:
		if open != 0 {
			return hd, message.CloseProtocolError
		}
	case opClose, opPing, opPong:
		if !hd.fin {
			return hd, message.CloseProtocolError
		}
	default:
		return hd, message.CloseProtocolError
	}
	if len(b) < 2 {
		return hd, 0
	}
	if b[1]&rfc6455.MaskBit == 0 { // clients must mask
		return hd, message.CloseProtocolError
	}
	if rfc6455.IsControl(hd.op) && b[1]&rfc6455.LenBits > rfc6455.MaxControlPayload {
		return hd, message.CloseProtocolError
	}
	length, known := rfc6455.PayloadLength(b)
	if !known {
		return hd, 0
	}
	if !rfc6455.IsControl(hd.op) {
		room := limit
		if p.rx != nil {
			room -= len(p.rx.msg)
		}
		if length > uint64(max(room, 0)) {
			return hd, message.CloseMessageTooBig
		}
	}
	size := rfc6455.HeaderSize(b)
	if len(b) < size {
		return hd, 0
	}
	copy(hd.mask[:], b[size-4:size])
	hd.length = int(length)
	hd.size = size
	return hd, 0
}

// dispatch unmasks a complete frame's payload and hands it on: control frames at once, data
// frames as whole messages (fragments are accumulated first). It returns a close code, and
// whether to go on parsing.
func (p *parser) dispatch(hd header, payload []byte, h frameHandler, c *conn) (uint16, bool) {
	h.onFrame(c)
	rfc6455.Mask(payload, hd.mask)
	switch hd.op {
	case opClose, opPing, opPong:
		more := h.onControl(c, hd.op, payload)
		p.release()
		return 0, more
	case opContinuation:
		rx := p.rx
		rx.msg = append(rx.msg, payload...)
		if rx.msgOp == opText && !rx.checkText(hd.fin) {
			return message.CloseInvalidPayload, false
		}
		if !hd.fin {
			return 0, true
		}
		msg, op := rx.msg, rx.msgOp
		rx.msg, rx.msgOp, rx.valid = nil, 0, 0
		p.release()
		return 0, h.onMessage(c, op, msg)
	}
	if !hd.fin {
		rx := p.partial()
		rx.msgOp = hd.op
		rx.msg = append(make([]byte, 0, len(payload)), payload...)
		if hd.op == opText && !rx.checkText(false) {
			return message.CloseInvalidPayload, false
		}
		return 0, true
	}
	p.release()
	if hd.op == opText && !utf8.Valid(payload) {
		return message.CloseInvalidPayload, false
	}
	return 0, h.onMessage(c, hd.op, payload)
}

// checkText validates the fragmented text message so far, from where the last check stopped,
// so invalid UTF-8 fails the connection as soon as it arrives rather than at the last
// fragment. Only at the end (final) may no incomplete rune remain.
func (rx *partial) checkText(final bool) bool {
	b, off := rx.msg, rx.valid
	for off < len(b) {
		if b[off] < utf8.RuneSelf {
			off++
			continue
		}
		if !utf8.FullRune(b[off:]) { // a rune split across fragments
			rx.valid = off
			return !final
		}
		r, size := utf8.DecodeRune(b[off:])
		if r == utf8.RuneError && size == 1 {
			return false
		}
		off += size
	}
	rx.valid = off
	return true
}

// partial returns the connection's partial state, allocating it if needed.
func (p *parser) partial() *partial {
	if p.rx == nil {
		p.rx = &partial{}
	}
	return p.rx
}

// release drops the partial state once nothing is pending.
func (p *parser) release() {
	if p.rx != nil && p.rx.pend == nil && p.rx.msg == nil && p.rx.msgOp == 0 {
		p.rx = nil
	}
}

// reset drops everything held, for a connection that is going away.
func (p *parser) reset() { p.rx = nil }

// begun reports whether the frame left incomplete by the last feed began in it, and clears
// that mark: the caller starts the frame's deadline then, and bytes that trickle in later do
// not move it.
func (p *parser) begun() bool {
	if p.rx == nil || p.rx.pend == nil || !p.rx.begun {
		return false
	}
	p.rx.begun = false
	return true
}

// announced returns the payload length the incomplete frame's header announces, once that
// header is complete, and only the first time: the caller adds session.FrameTime of it to the
// frame's deadline, once.
func (p *parser) announced(limit int) (length int, ok bool) {
	if p.rx == nil || p.rx.pend == nil || p.rx.sized {
		return 0, false
	}
	hd, code := p.parseHeader(p.rx.pend, limit)
	if code != 0 || hd.size == 0 {
		return 0, false
	}
	p.rx.sized = true
	return hd.length, true
}

// setDeadline records when the incomplete frame must be complete.
func (p *parser) setDeadline(tick uint32) { p.rx.by = tick }

// deadline is when the incomplete frame must be complete; 0 while no frame is incomplete.
func (p *parser) deadline() uint32 {
	if p.rx == nil || p.rx.pend == nil {
		return 0
	}
	return p.rx.by
}

// held is how many bytes the parser keeps between reads.
func (p *parser) held() int {
	if p.rx == nil {
		return 0
	}
	return cap(p.rx.pend) + cap(p.rx.msg)
}

// parseCloseBody reads a peer's close frame body: the code it carries (1005 when the body is
// empty) and whether the peer may send that body.
func parseCloseBody(b []byte) (code uint16, ok bool) {
	code, _, ok = rfc6455.ParseCloseBody(b)
	return code, ok
}
