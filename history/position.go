package history

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Position identifies one message of a stream: the stream's epoch (a history lost or replaced
// starts a new one), its sequence number in the epoch (1, 2, … ; 0 before the first message)
// and a tag derived from the message itself, so that a different message at the same place (a
// history rewound by a restore or a failover) is told apart. The zero Position means "no
// position": a message published without history, or a client without a cursor.
type Position struct {
	Epoch uint64
	Seq   uint64
	Tag   uint32
}

// IsZero reports whether p is no position at all.
func (p Position) IsZero() bool { return p.Epoch == 0 }

// cursorVersion starts every cursor, so that the encoding can change without a client noticing.
const cursorVersion = "1"

// Cursor encodes p as the opaque string clients save and send back (at most 64 bytes; here at
// most 35). Clients must not parse it.
func (p Position) Cursor() string {
	if p.IsZero() {
		return ""
	}
	b := make([]byte, 0, 36)
	b = append(b, cursorVersion...)
	b = append(b, '.')
	b = strconv.AppendUint(b, p.Epoch, 36)
	b = append(b, '.')
	b = strconv.AppendUint(b, p.Seq, 36)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(p.Tag), 36)
	return string(b)
}

// ErrBadCursor is returned for a cursor this service did not make.
var ErrBadCursor = errors.New("not a cursor of this service")

// ParseCursor decodes a cursor made by Cursor. The empty cursor is the zero Position.
func ParseCursor(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	if len(s) > 64 {
		return Position{}, fmt.Errorf("%w: %d bytes", ErrBadCursor, len(s))
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != cursorVersion {
		return Position{}, ErrBadCursor
	}
	var v [3]uint64
	for i, bits := range [3]int{64, 64, 32} {
		n, err := strconv.ParseUint(parts[i+1], 36, bits)
		if err != nil {
			return Position{}, ErrBadCursor
		}
		v[i] = n
	}
	if v[0] == 0 {
		return Position{}, ErrBadCursor
	}
	return Position{Epoch: v[0], Seq: v[1], Tag: uint32(v[2])}, nil
}

// Entry is one stored message. Prev is the tag of the message before it in the stream (0
// before the first), which lets a reader check that the entry really follows a cursor.
type Entry struct {
	Position    Position
	Prev        uint32
	Payload     []byte
	Traceparent string // W3C traceparent given at publish, if any
}

// Reason says why a stream is not continuous from a cursor.
type Reason string

// Reasons, as the v2 sync frame names them (docs/PROTOCOL.md).
const (
	ReasonNew         Reason = "new"         // no cursor given
	ReasonExpired     Reason = "expired"     // messages after the cursor were dropped by HISTORY_TTL
	ReasonTrimmed     Reason = "trimmed"     // messages after the cursor were dropped by HISTORY_SIZE
	ReasonLimit       Reason = "limit"       // more than the limit would be replayed; nothing is
	ReasonEpoch       Reason = "epoch"       // the history was lost or rewound since the cursor
	ReasonUnavailable Reason = "unavailable" // the history could not be read
)

// Result answers a Read.
type Result struct {
	// Entries are the messages after the cursor, in order, when Recovered. They are shared
	// with every reader of the same read: nobody may modify them.
	Entries []Entry
	// Recovered: the stream is continuous from the cursor once Entries are delivered.
	Recovered bool
	Reason    Reason // why not, when !Recovered
	// Missed is the number of positions skipped (from the cursor to Cursor) when !Recovered,
	// or -1 when unknown (no cursor, another epoch, unavailable).
	Missed int64
	// Cursor is the stream's position now: the last message's, or the stream's start when
	// nothing was published in its epoch yet. Zero only when unavailable.
	Cursor Position
}

// Limits are how much history is kept per stream.
type Limits struct {
	Size int           // messages kept per stream; 0 keeps none
	TTL  time.Duration // how long a stream's messages are kept after its last publish
}

// Validate rejects limits a store cannot honour.
func (l Limits) Validate() error {
	if l.Size < 0 {
		return fmt.Errorf("history size %d is negative", l.Size)
	}
	if l.Size > 0 && l.TTL < time.Millisecond {
		return fmt.Errorf("history TTL %v is below 1ms", l.TTL)
	}
	return nil
}

// Reader reads a stream's history after a cursor. channel is the stream's backplane channel
// (the Redis channel its messages are published on). limit is the most entries a recovered
// Result may carry (RECOVERY_MAX_MESSAGES). On error the Result says ReasonUnavailable.
type Reader interface {
	Read(ctx context.Context, channel string, after Position, limit int) (Result, error)
}
