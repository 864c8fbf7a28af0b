package history

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Memory keeps history in the process, for the embedded backplane: per stream a ring of the
// last Limits.Size entries, emptied Limits.TTL after the stream's last publish, and the
// stream's top position, kept for the life of the process (as Redis keeps its meta key). One
// epoch serves every stream, and a new process is a new epoch: its history starts empty.
type Memory struct {
	limits Limits
	epoch  uint64
	now    func() time.Time

	mu      sync.Mutex
	streams map[string]*ring
}

// ring is one stream: its top position and its last entries, oldest first from start.
type ring struct {
	top     Position
	entries []Entry // capacity Limits.Size, used as a ring
	start   int     // index of the oldest entry
	n       int     // entries held
	last    time.Time
}

// NewMemory makes an empty store with a fresh epoch. now may be nil (time.Now).
func NewMemory(limits Limits, now func() time.Time) (*Memory, error) {
	if err := limits.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	// The epoch only has to differ from the previous process's: the clock in microseconds
	// does, and a random low part covers two processes started in the same microsecond.
	epoch := uint64(now().UnixMicro())<<8 | uint64(rand.N(256))
	return &Memory{limits: limits, epoch: epoch, now: now, streams: map[string]*ring{}}, nil
}

// stream returns channel's ring, creating it at position 0 of the epoch, and drops its
// entries when they have expired. Called with mu held.
func (m *Memory) stream(channel string, now time.Time) *ring {
	r := m.streams[channel]
	if r == nil {
		r = &ring{top: Position{Epoch: m.epoch}}
		m.streams[channel] = r
	}
	if r.n > 0 && now.Sub(r.last) >= m.limits.TTL {
		clear(r.entries)
		r.start, r.n = 0, 0
	}
	return r
}

// Append stores payload as channel's next entry and returns it. A caller that publishes the
// entry keeps its own lock across Append and the publish, so that messages leave in the
// order of their positions.
func (m *Memory) Append(channel string, payload []byte, traceparent string) Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	r := m.stream(channel, now)
	e := Entry{
		Position:    Position{Epoch: m.epoch, Seq: r.top.Seq + 1, Tag: rand.Uint32N(1<<32-1) + 1},
		Prev:        r.top.Tag,
		Payload:     payload,
		Traceparent: traceparent,
	}
	r.top, r.last = e.Position, now
	if size := m.limits.Size; size > 0 {
		if r.entries == nil {
			r.entries = make([]Entry, size)
		}
		if r.n < size {
			r.entries[(r.start+r.n)%size] = e
			r.n++
		} else {
			r.entries[r.start] = e
			r.start = (r.start + 1) % size
		}
	}
	return e
}

// Read answers a reader of channel at after; it never fails.
func (m *Memory) Read(_ context.Context, channel string, after Position, limit int) (Result, error) {
	m.mu.Lock()
	r := m.stream(channel, m.now())
	s := snapshot{top: r.top, held: uint64(r.n)}
	if n := (need{}).add(after, limit, m.limits.Size); n.count > 0 && r.n > 0 {
		first := r.top.Seq - uint64(r.n) + 1
		skip := uint64(0)
		if n.from > first {
			skip = n.from - first
		}
		for i := skip; i < uint64(r.n) && len(s.entries) < n.count; i++ {
			s.entries = append(s.entries, r.entries[(uint64(r.start)+i)%uint64(len(r.entries))])
		}
	}
	m.mu.Unlock()
	return s.judge(after, limit, m.limits.Size), nil
}
