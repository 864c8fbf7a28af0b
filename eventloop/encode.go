//go:build linux

package eventloop

import "encoding/binary"

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// frameSize is the encoded length of an unmasked server frame carrying n payload bytes.
func frameSize(n int) int {
	switch {
	case n <= 125:
		return 2 + n
	case n <= 0xFFFF:
		return 4 + n
	}
	return 10 + n
}

// appendFrame appends one final, unmasked server frame (header then payload) to dst.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n <= 125:
		dst = append(dst, 0x80|op, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// encodeFrame returns a new frame of exactly the right size. A frame handed to several
// connections is shared and never modified after this returns.
func encodeFrame(op byte, payload []byte) []byte {
	return appendFrame(make([]byte, 0, frameSize(len(payload))), op, payload)
}

// encodeClose returns a close frame carrying code (no reason); code 0 means an empty body,
// the answer to a peer close frame that had no status code.
func encodeClose(code uint16) []byte {
	if code == 0 {
		return []byte{0x80 | opClose, 0}
	}
	return []byte{0x80 | opClose, 2, byte(code >> 8), byte(code)}
}
