package backplane

import "time"

// A node holds a reference on a channel for each of its connections (or handshakes) that
// needs it, and keeps a channel whose last reference was dropped for a linger period, so that
// a client reconnecting within it does not cost an UNSUBSCRIBE followed by a SUBSCRIBE.
//
// The count lives in whatever record the owner already keeps per channel (refs): the Redis
// relay's chanState, so that a channel costs the node one map entry, not one per concern (an
// idle connection is mostly such entries, docs/DESIGN.md "Memory per connection"); the
// embedded backplane's and the Redis backplane's own map while it has no relay (refcount).
// lingerQueue orders the channels left without references by when they became idle.

// refs is one channel's references.
type refs struct {
	n int32 // references held; a node's connections are far fewer than 2^31
	// idle is the number its queue gave it when n last dropped to zero: the lingering entry
	// with that number is the current one (a channel re-referenced and released again has a
	// later entry, a channel forgotten and held again a new number).
	idle uint32
}

// lingerQueue keeps the channels without references in the order they became idle, so in
// deadline order. It is not safe for concurrent use: its owner holds a lock around every call.
type lingerQueue struct {
	linger time.Duration // <= 0: no linger, a channel goes with its last reference
	queue  []lingering
	seq    uint32 // the last number given to an idle channel
}

type lingering struct {
	name  string
	since time.Time
	idle  uint32 // refs.idle when the entry was queued
}

// acquire takes a reference and reports whether it is the first one (the channel was idle,
// or new).
func (q *lingerQueue) acquire(r *refs) (first bool) {
	r.n++
	return r.n == 1
}

// release drops a reference on the channel name, and reports whether it was the last one
// (last) and whether the channel must go at once because there is no linger (gone). With a
// linger, a channel left without references is queued to go when it has passed. Releasing
// a channel that holds no reference does nothing.
func (q *lingerQueue) release(r *refs, name string, now time.Time) (last, gone bool) {
	if r.n == 0 {
		return false, false
	}
	r.n--
	if r.n > 0 {
		return false, false
	}
	if q.linger <= 0 {
		return true, true
	}
	q.idleSince(r, name, now)
	return true, false
}

// idleSince queues the channel name, without references since now, to go once the linger
// has passed.
func (q *lingerQueue) idleSince(r *refs, name string, now time.Time) {
	q.seq++
	r.idle = q.seq
	q.queue = append(q.queue, lingering{name: name, since: now, idle: r.idle})
}

// expire calls gone for every channel that has been without references for the linger
// period. lookup finds a channel's references, nil when the channel is no longer held.
func (q *lingerQueue) expire(now time.Time, lookup func(name string) *refs, gone func(name string)) {
	i := 0
	for ; i < len(q.queue); i++ {
		e := q.queue[i]
		if now.Sub(e.since) < q.linger {
			break
		}
		// A channel re-referenced (and perhaps idle again later) since this entry was queued
		// is skipped: a later entry, if any, is its current one.
		if r := lookup(e.name); r != nil && r.n == 0 && r.idle == e.idle {
			gone(e.name)
		}
	}
	if i > 0 {
		rest := copy(q.queue, q.queue[i:])
		clear(q.queue[rest:])
		q.queue = q.queue[:rest]
	}
}

// refcount is a map of channels to their references, for an owner that keeps no other
// record per channel. It is not safe for concurrent use: its owner holds a lock around every
// call.
type refcount struct {
	lingerQueue
	chans  map[string]*refs
	active int // channels with at least one reference
}

func newRefcount(linger time.Duration) *refcount {
	return &refcount{lingerQueue: lingerQueue{linger: linger}, chans: map[string]*refs{}}
}

// acquire takes a reference on ch and reports whether ch was not held at all before (not even
// lingering), in which case the caller must subscribe it.
func (rc *refcount) acquire(ch string) (subscribe bool) {
	r, ok := rc.chans[ch]
	if !ok {
		r = &refs{}
		rc.chans[ch] = r
	}
	if rc.lingerQueue.acquire(r) {
		rc.active++
	}
	return !ok
}

// release drops a reference on ch. A channel left without references starts to linger; with
// no linger at all it is removed at once and release reports that the caller must unsubscribe.
// Releasing a channel that holds no reference does nothing.
func (rc *refcount) release(ch string, now time.Time) (unsubscribe bool) {
	r, ok := rc.chans[ch]
	if !ok {
		return false
	}
	last, gone := rc.lingerQueue.release(r, ch, now)
	if last {
		rc.active--
	}
	if gone {
		delete(rc.chans, ch)
	}
	return gone
}

// expire removes the channels that have been without references for the linger period and
// calls unsubscribe for each.
func (rc *refcount) expire(now time.Time, unsubscribe func(ch string)) {
	rc.lingerQueue.expire(now, func(ch string) *refs { return rc.chans[ch] }, func(ch string) {
		delete(rc.chans, ch)
		unsubscribe(ch)
	})
}

// held reports whether ch is held, with references or lingering.
func (rc *refcount) held(ch string) bool {
	_, ok := rc.chans[ch]
	return ok
}

// reset forgets every channel.
func (rc *refcount) reset() {
	clear(rc.chans)
	rc.queue = nil
	rc.active = 0
}
