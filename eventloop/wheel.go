//go:build linux

package eventloop

// timerNode is one entry's place in a timing wheel: a connection keeps one, for its earliest
// deadline (next ping, silence timeout, token expiry, or the end of its closing handshake).
//
// Its wheel slot is not stored (it is at's, masked): every connection holds a node, so its
// four bytes are kept for the connection's other state.
type timerNode struct {
	prev, next int32  // neighbours in the slot's list, -1 at the ends; prev unlinked while not scheduled
	at         uint32 // tick the entry is due
}

// unlinked is timerNode.prev of a node that is not scheduled.
const unlinked = -2

// clear marks the node as not scheduled.
func (n *timerNode) clear() { *n = timerNode{prev: unlinked, next: -1} }

// scheduled reports whether the node is in a wheel.
func (n *timerNode) scheduled() bool { return n.prev != unlinked }

// wheel is a hashed timing wheel (after Netty's HashedWheelTimer): one per shard, holding every
// connection of the shard in the slot of its earliest deadline, so a shard needs one wait
// deadline instead of a runtime timer per connection. Entries are identified by int32 ids (the
// shard's connection slots); their links live in the entries themselves, so scheduling
// allocates nothing. Entries due more than one revolution ahead stay in their slot and are
// skipped until their tick comes round. Not safe for concurrent use: a wheel belongs to one loop.
type wheel struct {
	heads []int32 // first entry of each slot, -1 when empty
	mask  uint32
	cur   uint32 // the next tick to expire
	count int
	node  func(id int32) *timerNode
	due   []int32 // reused by expire
}

// newWheel returns a wheel of slots slots (a power of two) starting at tick now; node maps an
// id to its links.
func newWheel(slots int, now uint32, node func(id int32) *timerNode) *wheel {
	w := &wheel{heads: make([]int32, slots), mask: uint32(slots - 1), cur: now, node: node}
	for i := range w.heads {
		w.heads[i] = -1
	}
	return w
}

// schedule (re)places id to fire at tick at; a tick already expired means the next one.
func (w *wheel) schedule(id int32, at uint32) {
	n := w.node(id)
	if n.scheduled() {
		w.unlink(id, n)
	}
	at = max(at, w.cur)
	slot := at & w.mask
	n.at, n.prev, n.next = at, -1, w.heads[slot]
	if n.next >= 0 {
		w.node(n.next).prev = id
	}
	w.heads[slot] = id
	w.count++
}

// cancel removes id if it is scheduled.
func (w *wheel) cancel(id int32) {
	if n := w.node(id); n.scheduled() {
		w.unlink(id, n)
	}
}

func (w *wheel) unlink(id int32, n *timerNode) {
	if n.prev >= 0 {
		w.node(n.prev).next = n.next
	} else {
		w.heads[n.at&w.mask] = n.next
	}
	if n.next >= 0 {
		w.node(n.next).prev = n.prev
	}
	n.clear()
	w.count--
}

// expire removes and returns every id due at or before tick now. The returned slice is reused
// by the next call.
func (w *wheel) expire(now uint32) []int32 {
	w.due = w.due[:0]
	if now < w.cur {
		return w.due
	}
	ticks := uint64(now-w.cur) + 1
	if ticks > uint64(len(w.heads)) {
		ticks = uint64(len(w.heads)) // a long stall: every slot once
	}
	for i := uint64(0); i < ticks && w.count > 0; i++ {
		slot := (w.cur + uint32(i)) & w.mask
		for id := w.heads[slot]; id >= 0; {
			n := w.node(id)
			next := n.next
			if n.at <= now {
				w.unlink(id, n)
				w.due = append(w.due, id)
			}
			id = next
		}
	}
	w.cur = now + 1
	return w.due
}

// next returns the tick of the first non-empty slot from the current one, and false when the
// wheel is empty. The entry there may belong to a later revolution; waking for it is harmless.
func (w *wheel) next() (uint32, bool) {
	if w.count == 0 {
		return 0, false
	}
	for i := uint32(0); i <= w.mask; i++ {
		if w.heads[(w.cur+i)&w.mask] >= 0 {
			return w.cur + i, true
		}
	}
	return 0, false
}

// len is the number of scheduled entries.
func (w *wheel) len() int { return w.count }
