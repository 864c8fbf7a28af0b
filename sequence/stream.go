package sequence

import (
	"context"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
)

// stream is what the router knows of one channel. Everything in it is guarded by Router.mu;
// while busy, the repair worker that holds the stream owns last, and the receive goroutines
// only queue messages behind it.
type stream struct {
	channel string
	target  registry.Target
	last    history.Position // the last sequenced message delivered (zero: none yet)
	// left is the epoch the stream left for last's with a gap: its messages still on their
	// way are stragglers inside that gap.
	left uint64

	busy      bool // a repair is queued or under way: live messages wait in held
	draining  bool // the repair worker is delivering: giving up is no longer possible
	again     bool // the subscription resumed while busy: read the history once more
	gen       uint64
	cancel    context.CancelFunc // ends the repair's history read when it is given up
	wake      chan struct{}      // closed when the subscription resumes (non-nil while a failed read waits)
	drained   chan struct{}      // closed when a drain ends (non-nil while draining)
	held      []backplane.Message
	heldBytes int
}

// verdict is how a sequenced message relates to the last one delivered on its stream.
type verdict uint8

const (
	pass    verdict = iota // the next one (or the first, or a plain message): deliver it
	dup                    // already delivered: drop it
	jump                   // positions are missing before it: repair
	rewound                // another epoch, or a history rewound under it: a gap, then it
)

// judge places a message on the stream. A message is the next one only when it also names the
// last one's tag as its predecessor: a history restored from an older snapshot has other
// messages at the same positions.
func (st *stream) judge(p history.Position, prev uint32) verdict {
	last := st.last
	if p.IsZero() || last.IsZero() {
		return pass
	}
	if p.Epoch != last.Epoch {
		if p.Epoch == st.left {
			return dup
		}
		return rewound
	}
	switch {
	case p.Seq <= last.Seq:
		if p.Seq == last.Seq && p.Tag != last.Tag {
			return rewound
		}
		return dup
	case p.Seq == last.Seq+1:
		if prev != last.Tag {
			return rewound
		}
		return pass
	}
	return jump
}

// before is the position right before m in its stream, as m itself names it.
func before(m *backplane.Message) history.Position {
	return history.Position{Epoch: m.Position.Epoch, Seq: m.Position.Seq - 1, Tag: m.Prev}
}

// gap is the notice that positions up to at could not be delivered.
func (st *stream) gap(at history.Position, reason history.Reason, missed int64) registry.Delivery {
	return registry.Delivery{Target: st.target, Position: at, Gap: &registry.Gap{Reason: reason, Missed: missed}}
}

// firstOwed returns the first held message with a position that was not delivered already,
// or nil.
func (st *stream) firstOwed() *backplane.Message {
	for i := range st.held {
		m := &st.held[i]
		if !m.Position.IsZero() && st.judge(m.Position, m.Prev) != dup {
			return m
		}
	}
	return nil
}

// hole describes the hole a failed repair leaves: where it ends (the position before the
// first held message owed, else the stream's position the history reported) and how many
// positions it spans when known. ok is false when there is none: the first held message owed
// is the stream's next.
func (st *stream) hole(res history.Result) (end history.Position, missed int64, ok bool) {
	h := st.firstOwed()
	if h == nil {
		return res.Cursor, res.Missed, true
	}
	if st.judge(h.Position, h.Prev) == pass {
		return history.Position{}, 0, false
	}
	if h.Position.Epoch != st.last.Epoch {
		// A new epoch: the rest of the old one is lost, but what the new one published
		// before h may still be in its history (the drain reads it).
		return history.Position{Epoch: h.Position.Epoch}, -1, true
	}
	end, missed = before(h), -1
	if res.Reason != history.ReasonEpoch && end.Epoch == st.last.Epoch && end.Seq >= st.last.Seq {
		missed = int64(end.Seq - st.last.Seq)
	}
	return end, missed, true
}

// skipTo moves st past a gap to p, remembering the epoch it leaves.
func (st *stream) skipTo(p history.Position) {
	if !st.last.IsZero() && p.Epoch != st.last.Epoch {
		st.left = st.last.Epoch
	}
	st.last = p
}
