package history

// snapshot is what a store read of one stream returns: its current top position, how many
// entries it holds (they are contiguous and end at top), and the entries it fetched: a
// contiguous run starting at or after the position asked for.
type snapshot struct {
	top     Position
	held    uint64
	entries []Entry
}

// need is the range of entries a set of readers needs from a store read: from the smallest
// cursor's next position, as many as the widest of them may replay. Readers without a cursor,
// or with one from another epoch, need none but still share the read of the top.
type need struct {
	from  uint64 // first position to fetch (cursor + 1)
	count int    // at most this many; 0 fetches none
}

// add widens n so that it also covers a reader at after with the given limit.
func (n need) add(after Position, limit, size int) need {
	if after.IsZero() || size <= 0 {
		return n
	}
	// Even a reader that may replay nothing needs the entry after its cursor, whose
	// predecessor tag tells a rewound history from a continuous one.
	limit = max(limit, 1)
	from := after.Seq + 1
	if n.count == 0 {
		return need{from: from, count: min(limit, size)}
	}
	lo, hi := min(n.from, from), max(n.from+uint64(n.count), from+uint64(limit))
	return need{from: lo, count: int(min(hi-lo, uint64(size)))}
}

// judge decides, for a reader at after, whether the stream is continuous from it and which
// entries follow it. size is the store's HISTORY_SIZE, limit the reader's replay limit.
//
// A cursor is continuous only when the stream has the same epoch, has not gone behind it, and
// either the cursor is the top itself (same tag) or the entry right after the cursor is held
// and names the cursor's tag as its predecessor: a rewound history (a restore, a failover to a
// lagging replica) has different messages at the same positions, so its tags differ.
func (s *snapshot) judge(after Position, limit, size int) Result {
	top := s.top
	lost := Result{Reason: ReasonEpoch, Missed: -1, Cursor: top}
	switch {
	case after.IsZero():
		return Result{Reason: ReasonNew, Missed: -1, Cursor: top}
	case after.Epoch != top.Epoch, after.Seq > top.Seq:
		return lost
	case after.Seq == top.Seq:
		if after.Tag != top.Tag {
			return lost
		}
		return Result{Recovered: true, Cursor: top}
	}
	missed := top.Seq - after.Seq
	gone := Result{Reason: ReasonTrimmed, Missed: int64(missed), Cursor: top}
	first := top.Seq - s.held + 1 // the oldest position held, when held > 0
	if s.held == 0 || first > after.Seq+1 {
		// The history holds fewer than HISTORY_SIZE entries only when the ones before them
		// expired (a TTL drops the whole history at once); a full one was trimmed.
		if s.held < uint64(size) {
			gone.Reason = ReasonExpired
		}
		return gone
	}
	i := -1
	if len(s.entries) > 0 && after.Seq+1 >= s.entries[0].Position.Seq {
		i = int(after.Seq + 1 - s.entries[0].Position.Seq)
	}
	if i < 0 || i >= len(s.entries) {
		// The read did not fetch what it had to: the store changed shape under it.
		return Result{Reason: ReasonUnavailable, Missed: -1, Cursor: top}
	}
	if s.entries[i].Prev != after.Tag {
		return lost
	}
	if missed > uint64(limit) {
		return Result{Reason: ReasonLimit, Missed: int64(missed), Cursor: top}
	}
	end := i + int(missed)
	if end > len(s.entries) {
		return Result{Reason: ReasonUnavailable, Missed: -1, Cursor: top}
	}
	return Result{Entries: s.entries[i:end:end], Recovered: true, Cursor: top}
}
