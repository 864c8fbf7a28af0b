package rfc6455

import (
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strings"
)

// acceptGUID is the fixed GUID of RFC 6455 §1.3.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Lengths of the handshake's keys.
const (
	KeyLen         = 24 // Sec-WebSocket-Key: base64 of a 16-byte nonce
	AcceptLen      = 28 // Sec-WebSocket-Accept: base64 of a SHA-1 sum
	keyDecodedSize = 18 // what base64 decoding of KeyLen characters may need
)

// ValidKey reports whether key is the base64 encoding of exactly 16 bytes (RFC 6455 §4.2.1).
// It does not allocate.
func ValidKey(key string) bool {
	if len(key) != KeyLen {
		return false
	}
	var src [KeyLen]byte
	var dst [keyDecodedSize]byte
	copy(src[:], key)
	n, err := base64.StdEncoding.Decode(dst[:], src[:])
	return err == nil && n == 16
}

// AppendAccept appends Sec-WebSocket-Accept's value for key (RFC 6455 §4.2.2) to b. For a key
// of KeyLen bytes it allocates nothing beyond b's growth: it runs on every handshake.
func AppendAccept(b []byte, key string) []byte {
	var sum [sha1.Size]byte
	if len(key) == KeyLen {
		var in [KeyLen + len(acceptGUID)]byte
		copy(in[copy(in[:], key):], acceptGUID)
		sum = sha1.Sum(in[:])
	} else {
		sum = sha1.Sum([]byte(key + acceptGUID))
	}
	return base64.StdEncoding.AppendEncode(b, sum[:])
}

// Accept is Sec-WebSocket-Accept's value for key, as a client checks it.
func Accept(key string) string { return string(AppendAccept(make([]byte, 0, AcceptLen), key)) }

// IsUpgrade reports whether h asks for a WebSocket upgrade at all (Connection: upgrade and
// Upgrade: websocket): the cheap pre-check before the rest of the handshake (key, version) is
// validated.
func IsUpgrade(h http.Header) bool {
	return HeaderHasToken(h, "Connection", "upgrade") && HeaderHasToken(h, "Upgrade", "websocket")
}

// HeaderHasToken reports whether any comma-separated element of header name equals token,
// ignoring case and surrounding space (Connection: keep-alive, Upgrade). name must be in
// canonical form (textproto.CanonicalMIMEHeaderKey, "Sec-Websocket-Protocol"): the map is
// indexed directly, with no canonicalization per request.
func HeaderHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for v != "" {
			var elem string
			elem, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(elem), token) {
				return true
			}
		}
	}
	return false
}
