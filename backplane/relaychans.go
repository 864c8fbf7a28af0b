package backplane

import "time"

// The channels of a relay as the node holds them: their references (refcount.go), which live
// in their chanState, and what must be sent for them. The Redis backplane routes each
// channel to one relay and calls these with its own lock held; each takes the relay's.

// heldChannel is a channel held by a relay and its references, as it moves to another relay.
type heldChannel struct {
	name string
	n    int32
}

// acquire takes a reference on each channel, marking the ones not held yet to be subscribed.
// It returns how many of them had no reference before (new, or lingering).
func (r *relay) acquire(chans []string) (first int) {
	r.mu.Lock()
	queued := len(r.dirty)
	for _, ch := range chans {
		st, _ := r.chans.Get(ch)
		if st == nil {
			st = &chanState{name: ch}
			r.chans.Put(st)
		}
		if r.lingers.acquire(&st.refs) {
			first++
		}
		if !st.want {
			r.markLocked(st, true, false)
		}
	}
	r.unlockWaking(queued)
	return first
}

// release drops a reference on each channel. A channel left without references lingers, or,
// without a linger, is unsubscribed at once. It returns how many channels were left without
// references. Releasing a channel that holds no reference does nothing.
func (r *relay) release(chans []string, now time.Time) (last int) {
	r.mu.Lock()
	queued := len(r.dirty)
	for _, ch := range chans {
		st, _ := r.chans.Get(ch)
		if st == nil || !st.want {
			continue
		}
		dropped, gone := r.lingers.release(&st.refs, ch, now)
		if dropped {
			last++
		}
		if gone {
			r.markLocked(st, false, false)
		}
	}
	r.unlockWaking(queued)
	return last
}

// expire unsubscribes the channels that have been without references for the linger period.
func (r *relay) expire(now time.Time) {
	r.mu.Lock()
	queued := len(r.dirty)
	r.lingers.expire(now, r.heldRefsLocked, func(ch string) {
		st, _ := r.chans.Get(ch)
		r.markLocked(st, false, false)
	})
	r.unlockWaking(queued)
}

// unlockWaking releases r.mu and wakes the writer if channels were queued for it since dirty
// held queued of them: most acquires and releases only count references (a user's second
// connection, a group already subscribed), and every handshake and disconnect calls them.
func (r *relay) unlockWaking(queued int) {
	more := len(r.dirty) > queued
	r.mu.Unlock()
	if more {
		r.wake()
	}
}

// heldRefsLocked returns the references of ch, nil when ch is not held.
func (r *relay) heldRefsLocked(ch string) *refs {
	if st, _ := r.chans.Get(ch); st != nil && st.want {
		return &st.refs
	}
	return nil
}

// held lists the channels held, with references or lingering.
func (r *relay) held() []heldChannel {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]heldChannel, 0, r.chans.Len())
	for st := range r.chans.All() {
		if st.want {
			out = append(out, heldChannel{name: st.name, n: st.refs.n})
		}
	}
	return out
}

// take holds channels with their references: ones moved here from another connection
// (moved: they resume), or held before this relay existed. One without references lingers
// from now.
func (r *relay) take(chans []heldChannel, moved bool, now time.Time) {
	r.mu.Lock()
	for _, h := range chans {
		st, _ := r.chans.Get(h.name)
		if st == nil {
			st = &chanState{name: h.name}
			r.chans.Put(st)
		}
		st.refs.n += h.n
		if st.refs.n == 0 { // lingering where it was (only with a linger)
			r.lingers.idleSince(&st.refs, h.name, now)
		}
		r.markLocked(st, true, moved)
	}
	r.mu.Unlock()
	r.wake()
}

// handOff marks channels moved to another connection, with their references, to be
// unsubscribed.
func (r *relay) handOff(chans []string) {
	r.mu.Lock()
	for _, ch := range chans {
		if st, _ := r.chans.Get(ch); st != nil {
			st.refs.n = 0
			r.markLocked(st, false, true)
		}
	}
	r.mu.Unlock()
	r.wake()
}

// markLocked records whether st is wanted, and queues what must be sent for it.
func (r *relay) markLocked(st *chanState, want, moved bool) {
	st.want = want
	if want {
		st.resume = st.resume || moved
		st.handedOff = false
	} else {
		st.handedOff = moved
	}
	if !want && !st.onWire && st.acks == 0 && !st.queued {
		r.chans.Delete(st.name) // not on the wire (the server dropped it): nothing to send
		return
	}
	r.enqueueLocked(st)
}

// enqueueLocked queues st for the writer when what is on the wire differs from what is
// wanted.
func (r *relay) enqueueLocked(st *chanState) {
	if st.want != st.onWire && !st.queued {
		st.queued = true
		r.dirty = append(r.dirty, st)
	}
}
