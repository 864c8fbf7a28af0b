// Package rfc6455 is the WebSocket wire format (RFC 6455), written once: opcodes, close codes
// and which of them a peer may send, frame headers, server and client frame encoding, and the
// handshake's accept key and header tokens. It keeps no state and does no I/O; the engines'
// parsers and connection state machines, and the raw test client internal/wsraw, build on it.
package rfc6455

import "encoding/binary"

// Opcodes (RFC 6455 §5.2). The others are reserved.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// The fields of a frame header's first two bytes (RFC 6455 §5.2).
const (
	FinBit  byte = 0x80 // first byte: the last frame of a message
	RSVBits byte = 0x70 // first byte: reserved for extensions (none is negotiated here)
	OpBits  byte = 0x0F // first byte: the opcode
	MaskBit byte = 0x80 // second byte: the payload is masked, as every client frame must be
	LenBits byte = 0x7F // second byte: the length code, the length itself up to len7, or:
	Len16   byte = 126  // length code: a 16-bit length follows
	Len64   byte = 127  // length code: a 64-bit length follows

	len7 = 125 // the longest payload whose length the length code holds itself
)

// Sizes the format fixes.
const (
	MaxControlPayload = 125 // a control frame carries at most this, in one frame
	MaxServerHeader   = 10  // first byte, length code, 64-bit length
	MaxClientHeader   = 14  // the same and the 4-byte masking key
)

// IsControl reports whether op is a control opcode (close, ping, pong, or a reserved one).
func IsControl(op byte) bool { return op&0x8 != 0 }

// KnownOpcode reports whether op is one RFC 6455 defines.
func KnownOpcode(op byte) bool { return op <= OpBinary || (op >= OpClose && op <= OpPong) }

// Header is a decoded frame header. It says what the bytes announce; which frames are allowed
// depends on who sent them and what came before, and is the reader's to check.
type Header struct {
	Fin    bool
	RSV    byte // the three reserved bits, as a value 0-7
	Op     byte
	Masked bool
	Mask   [4]byte
	Length uint64 // payload bytes announced: a claim, not a fact
	Size   int    // header bytes, masking key included
}

// HeaderSize is how many bytes the header at the start of b takes, as far as b tells: 2 until
// its second byte is there.
func HeaderSize(b []byte) int {
	if len(b) < 2 {
		return 2
	}
	n := 2
	switch b[1] & LenBits {
	case Len16:
		n += 2
	case Len64:
		n += 8
	}
	if b[1]&MaskBit != 0 {
		n += 4
	}
	return n
}

// PayloadLength is the payload length the header at the start of b announces; ok is false
// while b is too short to tell. The masking key need not be there yet, so a reader can refuse
// a frame over its limit before it has the whole header.
func PayloadLength(b []byte) (n uint64, ok bool) {
	if len(b) < 2 {
		return 0, false
	}
	switch code := b[1] & LenBits; code {
	case Len16:
		if len(b) < 4 {
			return 0, false
		}
		return uint64(binary.BigEndian.Uint16(b[2:])), true
	case Len64:
		if len(b) < 10 {
			return 0, false
		}
		return binary.BigEndian.Uint64(b[2:]), true
	default:
		return uint64(code), true
	}
}

// ParseHeader decodes the header at the start of b; ok is false while b holds only part of it.
func ParseHeader(b []byte) (h Header, ok bool) {
	size := HeaderSize(b)
	if len(b) < 2 || len(b) < size {
		return h, false
	}
	h.Fin = b[0]&FinBit != 0
	h.RSV = (b[0] & RSVBits) >> 4
	h.Op = b[0] & OpBits
	h.Masked = b[1]&MaskBit != 0
	h.Length, _ = PayloadLength(b)
	if h.Masked {
		copy(h.Mask[:], b[size-4:size])
	}
	h.Size = size
	return h, true
}

// AppendHeader appends a frame header to dst: b0 is its first byte (FIN, RSV bits, opcode), n
// the payload length, written in its shortest form, and masked sets the MASK bit; the masking
// key, when there is one, is the caller's to append. Any b0 goes, so a test can write frames
// no peer may send.
func AppendHeader(dst []byte, b0 byte, n uint64, masked bool) []byte {
	var m byte
	if masked {
		m = MaskBit
	}
	switch {
	case n <= len7:
		return append(dst, b0, m|byte(n))
	case n <= 0xFFFF:
		return append(dst, b0, m|Len16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, b0, m|Len64), n)
}

// FrameSize is the encoded length of an unmasked server frame carrying n payload bytes.
func FrameSize(n int) int {
	switch {
	case n <= len7:
		return 2 + n
	case n <= 0xFFFF:
		return 4 + n
	}
	return MaxServerHeader + n
}

// AppendFrame appends one final, unmasked frame (as a server sends it), header then payload,
// to dst. It allocates only when dst lacks room, so a caller that sized dst with FrameSize
// encodes without allocating.
func AppendFrame(dst []byte, op byte, payload []byte) []byte {
	return append(AppendHeader(dst, FinBit|op, uint64(len(payload)), false), payload...)
}

// EncodeFrame returns a new final, unmasked frame of exactly its size, for a frame that is
// handed to many connections and never modified after.
func EncodeFrame(op byte, payload []byte) []byte {
	return AppendFrame(make([]byte, 0, FrameSize(len(payload))), op, payload)
}

// AppendMasked appends what follows a client frame's header (RFC 6455 §5.3): the masking
// key, then payload masked with it.
func AppendMasked(dst, payload []byte, key [4]byte) []byte {
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	Mask(dst[start:], key)
	return dst
}

// Mask XORs b in place with the masking key, eight bytes at a time; it masks and unmasks alike.
func Mask(b []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k64)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}
