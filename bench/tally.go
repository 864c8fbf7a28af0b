package bench

// tally accounts for what one connection received of the targets it is subscribed to: a
// bitset per target over the sequence numbers the plan sends it, so a second copy of a
// message is a duplicate, a number outside the plan is unexpected, and whatever is not set
// at the end is lost. It is owned by one connection and not safe for concurrent use.
type tally struct {
	targets []int      // target indices this connection receives
	seen    [][]uint64 // per target, one bit per sequence number
	counts  []int      // per target, how many messages the plan sends
	last    []int      // per target, the last sequence number received (-1 before any)

	unique, dups, unexpected, reordered int64
}

// outcome of one received stamp.
type outcome uint8

const (
	fresh outcome = iota
	duplicate
	unexpected
)

func newTally(subs []int, targets []Target) tally {
	t := tally{
		targets: subs,
		seen:    make([][]uint64, len(subs)),
		counts:  make([]int, len(subs)),
		last:    make([]int, len(subs)),
	}
	for i, j := range subs {
		n := targets[j].Count
		t.counts[i] = n
		t.seen[i] = make([]uint64, (n+63)/64)
		t.last[i] = -1
	}
	return t
}

// expected is how many messages the plan sends this connection.
func (t *tally) expected() int64 {
	var n int64
	for _, c := range t.counts {
		n += int64(c)
	}
	return n
}

// lost is what the plan sent and this connection has not received.
func (t *tally) lost() int64 { return t.expected() - t.unique }

// record accounts for one received message of target with sequence seq.
func (t *tally) record(target, seq int) outcome {
	for i, j := range t.targets {
		if j != target {
			continue
		}
		if seq < 0 || seq >= t.counts[i] {
			t.unexpected++
			return unexpected
		}
		word, bit := seq/64, uint64(1)<<(seq%64)
		if t.seen[i][word]&bit != 0 {
			t.dups++
			return duplicate
		}
		t.seen[i][word] |= bit
		t.unique++
		// Per-channel publish order is promised per connection; count departures from it.
		if seq < t.last[i] {
			t.reordered++
		}
		t.last[i] = seq
		return fresh
	}
	t.unexpected++
	return unexpected
}
