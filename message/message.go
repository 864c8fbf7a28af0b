// Package message defines what travels over a WebSocket between this service and a browser:
// the JSON messages the server originates (errors, auth replies, the notification shape that
// backends publish), the client's in-band auth refresh, the echo reply, and the close codes of
// docs/PROTOCOL.md. Both engines use it, so the wire format is defined once.
package message

import (
	"bytes"
	"encoding/json"

	"github.com/huleedu/websocket-service/internal/rfc6455"
)

// Error codes sent in an ErrorMessage.
const (
	CodeAuthFailed      = "AUTH_FAILED"
	CodeTokenExpired    = "TOKEN_EXPIRED"
	CodeConnectionLimit = "CONNECTION_LIMIT"
	CodeMessageTooLarge = "MESSAGE_TOO_LARGE"
	CodeRateLimited     = "RATE_LIMITED"
	CodeSlowConsumer    = "SLOW_CONSUMER"
)

// Close codes (RFC 6455 §7.4.1, defined in internal/rfc6455) and what this service uses them
// for.
const (
	CloseNormal          = rfc6455.CloseNormal        // normal closure
	CloseGoingAway       = rfc6455.CloseGoingAway     // server draining, heartbeat timeout
	CloseProtocolError   = rfc6455.CloseProtocolError // malformed frames
	CloseUnsupportedData = rfc6455.CloseUnsupportedData
	CloseNoStatus        = rfc6455.CloseNoStatus        // never sent; a close frame without a code
	CloseAbnormal        = rfc6455.CloseAbnormal        // never sent; the TCP connection ended without a close frame
	CloseInvalidPayload  = rfc6455.CloseInvalidPayload  // text that is not UTF-8
	ClosePolicyViolation = rfc6455.ClosePolicyViolation // auth failure, token expired, connection limit
	CloseMessageTooBig   = rfc6455.CloseMessageTooBig   // inbound message over MAX_MESSAGE_SIZE
	CloseInternalError   = rfc6455.CloseInternalError
	CloseTryAgainLater   = rfc6455.CloseTryAgainLater // slow consumer
)

// Type values of the JSON messages.
const (
	TypeNotification = "notification"
	TypeError        = "error"
	TypeAuth         = "auth"
	TypeAuthOK       = "auth_ok"
)

// Notification is the shape backends are expected to publish; the service forwards payloads
// verbatim and never re-encodes them.
type Notification struct {
	Type      string          `json:"type"`
	EventType string          `json:"event_type"`
	Data      json.RawMessage `json:"data"`
}

// Error is the ErrorMessage the server sends before closing a connection it refuses.
type Error struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

var errorTexts = map[string]string{
	CodeAuthFailed:      "Authentication failed",
	CodeTokenExpired:    "Token expired",
	CodeConnectionLimit: "Connection limit reached",
	CodeMessageTooLarge: "Message too large",
	CodeRateLimited:     "Rate limited",
	CodeSlowConsumer:    "Client is not reading fast enough",
}

// NewError returns the ErrorMessage for one of the Code* constants.
func NewError(code string) Error {
	text, ok := errorTexts[code]
	if !ok {
		text = code
	}
	return Error{Type: TypeError, Code: code, Message: text}
}

// JSON encodes the message.
func (e Error) JSON() []byte {
	b, _ := json.Marshal(e) // a struct of strings always encodes
	return b
}

// ErrorJSON returns the encoded ErrorMessage for code.
func ErrorJSON(code string) []byte { return NewError(code).JSON() }

// AuthRequest is the client's in-band token refresh.
type AuthRequest struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// AuthOK answers a successful refresh with the new expiry (unix seconds).
type AuthOK struct {
	Type string `json:"type"`
	Exp  int64  `json:"exp"`
}

// AuthOKJSON encodes an AuthOK for exp.
func AuthOKJSON(exp int64) []byte {
	b, _ := json.Marshal(AuthOK{Type: TypeAuthOK, Exp: exp})
	return b
}

// authMarker is a cheap pre-check: only text containing it is decoded as JSON, so the echo
// path for ordinary text does no JSON work.
var authMarker = []byte(`"auth"`)

// ParseAuth reports whether a client text message is an auth refresh and returns its token.
// Anything else (not JSON, another type) is not an auth request and gets the echo.
func ParseAuth(text []byte) (token string, ok bool) {
	t := bytes.TrimSpace(text)
	if len(t) == 0 || t[0] != '{' || !bytes.Contains(t, authMarker) {
		return "", false
	}
	var req AuthRequest
	if json.Unmarshal(t, &req) != nil || req.Type != TypeAuth {
		return "", false
	}
	return req.Token, true
}

// EchoPrefix starts the reply to a client text message (docs/PROTOCOL.md, notifications.v1).
const EchoPrefix = "Echo: "

// Echo returns the reply to a client text message.
func Echo(text []byte) []byte {
	out := make([]byte, 0, len(EchoPrefix)+len(text))
	out = append(out, EchoPrefix...)
	return append(out, text...)
}
