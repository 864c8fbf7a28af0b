package rfc6455

import (
	"encoding/binary"
	"unicode/utf8"
)

// Close codes (RFC 6455 §7.4.1 and the IANA registry). The codes marked "never sent" stand for
// what a close frame did not carry; they must not appear on the wire.
const (
	CloseNormal             uint16 = 1000
	CloseGoingAway          uint16 = 1001
	CloseProtocolError      uint16 = 1002
	CloseUnsupportedData    uint16 = 1003
	CloseNoStatus           uint16 = 1005 // never sent: a close frame without a code
	CloseAbnormal           uint16 = 1006 // never sent: the connection ended without a close frame
	CloseInvalidPayload     uint16 = 1007
	ClosePolicyViolation    uint16 = 1008
	CloseMessageTooBig      uint16 = 1009
	CloseMandatoryExtension uint16 = 1010
	CloseInternalError      uint16 = 1011
	CloseServiceRestart     uint16 = 1012
	CloseTryAgainLater      uint16 = 1013
	CloseBadGateway         uint16 = 1014
	CloseTLSHandshake       uint16 = 1015 // never sent: the TLS handshake failed
)

// ValidCloseCode reports whether a peer may send code: 1004-1006 and 1015 are reserved,
// 1016-2999 are unassigned, 3000-4999 are for libraries and applications.
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= CloseNormal && code <= CloseUnsupportedData,
		code >= CloseInvalidPayload && code <= CloseBadGateway:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// CloseBody is the body of a close frame carrying code and reason. Any code goes, so a test can
// send one no peer may.
func CloseBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), code), reason...)
}

// EncodeClose returns a server close frame carrying code and no reason, of exactly its size;
// code 0 means an empty body.
func EncodeClose(code uint16) []byte {
	if code == 0 {
		return []byte{FinBit | OpClose, 0}
	}
	return []byte{FinBit | OpClose, 2, byte(code >> 8), byte(code)}
}

// ParseCloseBody reads a close frame's body: the code it carries (CloseNoStatus when the body
// is empty), the reason, and whether a peer may send the body (a one-byte body, a code
// ValidCloseCode refuses or a reason that is not UTF-8 may not).
func ParseCloseBody(b []byte) (code uint16, reason []byte, ok bool) {
	switch len(b) {
	case 0:
		return CloseNoStatus, nil, true
	case 1:
		return 0, nil, false
	}
	code, reason = binary.BigEndian.Uint16(b), b[2:]
	return code, reason, ValidCloseCode(code) && utf8.Valid(reason)
}
