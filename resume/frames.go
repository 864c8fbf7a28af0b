package resume

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
)

// The v2 frames (docs/PROTOCOL.md "Protocol notifications.v2"). They are built by appending
// to one buffer: a live message frame is built once per delivery and shared by every v2
// connection it reaches, so it must cost one allocation, not a JSON encoder per connection.

// MessageFrame is {"type":"message","stream":…,"cursor":…,"data":…} for payload at pos
// (cursor null for the zero Position). data is the payload itself when it is a JSON object or
// array, else the payload as a JSON string.
func MessageFrame(stream string, pos history.Position, payload []byte) []byte {
	b := make([]byte, 0, len(payload)+len(stream)+80)
	b = append(b, `{"type":"message","stream":`...)
	b = appendString(b, stream)
	b = append(b, `,"cursor":`...)
	b = appendCursor(b, pos)
	b = append(b, `,"data":`...)
	if t := bytes.TrimSpace(payload); len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t) {
		b = append(b, t...)
	} else {
		b = appendString(b, string(payload))
	}
	return append(b, '}')
}

// DeliveryFrame is the v2 frame of one delivery: its message, or for a gap notice the sync
// frame saying the stream is not continuous up to the delivery's position.
func DeliveryFrame(d *registry.Delivery) []byte {
	if d.Gap != nil {
		return SyncFrame(d.Target.Stream(), history.Result{Reason: d.Gap.Reason, Missed: d.Gap.Missed, Cursor: d.Position}, 0)
	}
	return MessageFrame(d.Target.Stream(), d.Position, d.Payload)
}

// SyncFrame is the sync frame of stream for a history verdict r after replayed messages:
// recovered with replayed, or not with reason and missed (null when unknown).
func SyncFrame(stream string, r history.Result, replayed int) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"sync","stream":`...)
	b = appendString(b, stream)
	b = append(b, `,"cursor":`...)
	b = appendCursor(b, r.Cursor)
	if r.Recovered {
		b = append(b, `,"recovered":true,"replayed":`...)
		b = strconv.AppendInt(b, int64(replayed), 10)
		return append(b, '}')
	}
	b = append(b, `,"recovered":false,"reason":`...)
	b = appendString(b, string(r.Reason))
	b = append(b, `,"missed":`...)
	if r.Missed < 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, r.Missed, 10)
	}
	return append(b, '}')
}

// UnsubscribedFrame tells the client a token refresh removed stream.
func UnsubscribedFrame(stream string) []byte {
	b := append([]byte(`{"type":"unsubscribed","stream":`), nil...)
	b = appendString(b, stream)
	return append(b, '}')
}

// EchoFrame is the v2 answer to a client text message.
func EchoFrame(text []byte) []byte {
	b := make([]byte, 0, len(text)+32)
	b = append(b, `{"type":"echo","data":`...)
	b = appendString(b, string(text))
	return append(b, '}')
}

func appendCursor(b []byte, p history.Position) []byte {
	if p.IsZero() {
		return append(b, "null"...)
	}
	return appendString(b, p.Cursor())
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD (a payload that is
// not UTF-8 never reaches a text frame anyway).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// resumeMarker is a cheap pre-check, as for the auth refresh: only text containing it is
// decoded as JSON.
var resumeMarker = []byte(`"resume"`)

// ParseResume reports whether a client text message is a resume frame and returns its cursors
// by stream (values that are not strings are left out).
func ParseResume(text []byte) (map[string]string, bool) {
	t := bytes.TrimSpace(text)
	if len(t) == 0 || t[0] != '{' || !bytes.Contains(t, resumeMarker) {
		return nil, false
	}
	var f struct {
		Type    string                     `json:"type"`
		Streams map[string]json.RawMessage `json:"streams"`
	}
	if json.Unmarshal(t, &f) != nil || f.Type != "resume" {
		return nil, false
	}
	out := make(map[string]string, len(f.Streams))
	for k, v := range f.Streams {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		}
	}
	return out, true
}
