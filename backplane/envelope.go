package backplane

import (
	"math"

	"github.com/huleedu/websocket-service/history"
)

// A sequenced message travels through Redis in an envelope the history's function library
// writes (history/library.lua, docs/PROTOCOL.md "Publishing"):
//
//	0xFF '1' ' ' epoch ' ' seq ' ' tag ' ' prev ' ' [traceparent] '\n' payload
//
// 0xFF never occurs in UTF-8, and a payload that is not UTF-8 cannot be sent to a client as
// text (it is dropped), so no payload a client could receive is mistaken for an envelope. A
// payload that starts with 0xFF but is not a well-formed envelope is left as it is, a plain
// payload, and dropped as such.
const (
	envelopeMark    = 0xFF
	envelopeVersion = '1'
)

// message builds the Message for a payload received on channel, taking a sequenced message
// out of its envelope. It does not allocate: every slice points into payload.
func message(channel string, payload []byte) Message {
	m := Message{Channel: channel, Payload: payload}
	if len(payload) == 0 || payload[0] != envelopeMark {
		return m
	}
	pos, prev, tp, body, ok := openEnvelope(payload)
	if ok {
		m.Payload, m.Position, m.Prev, m.Traceparent = body, pos, prev, tp
	}
	return m
}

// openEnvelope parses an envelope; ok is false when b is not a well-formed one.
func openEnvelope(b []byte) (pos history.Position, prev uint32, traceparent, payload []byte, ok bool) {
	if len(b) < 3 || b[0] != envelopeMark || b[1] != envelopeVersion || b[2] != ' ' {
		return pos, 0, nil, nil, false
	}
	rest := b[3:]
	var fields [4]uint64
	for i := range fields {
		n, used := leadingUint(rest)
		if used == 0 || used >= len(rest) || rest[used] != ' ' {
			return pos, 0, nil, nil, false
		}
		fields[i], rest = n, rest[used+1:]
	}
	nl := -1
	for i, c := range rest {
		if c == '\n' {
			nl = i
			break
		}
	}
	if nl < 0 || fields[0] == 0 || fields[2] > 1<<32-1 || fields[3] > 1<<32-1 {
		return pos, 0, nil, nil, false
	}
	pos = history.Position{Epoch: fields[0], Seq: fields[1], Tag: uint32(fields[2])}
	if nl > 0 {
		traceparent = rest[:nl:nl]
	}
	return pos, uint32(fields[3]), traceparent, rest[nl+1:], true
}

// leadingUint parses the decimal digits at the start of b; used is how many bytes they take
// (0 when there are none, or the number exceeds a uint64).
func leadingUint(b []byte) (n uint64, used int) {
	for used < len(b) && b[used] >= '0' && b[used] <= '9' {
		d := uint64(b[used] - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, 0
		}
		n = n*10 + d
		used++
	}
	return n, used
}
