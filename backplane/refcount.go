package backplane

import "time"

// refcount counts the references a node holds on each channel and keeps a channel whose last
// reference was dropped for a linger period, so that a client reconnecting within it does not
// cost an UNSUBSCRIBE followed by a SUBSCRIBE. It is not safe for concurrent use: its owner
// holds a lock around every call.
type refcount struct {
	linger time.Duration
	chans  map[string]*ref
	idle   []idleChannel // in the order channels became idle, so in deadline order
	active int           // channels with at least one reference
}

type ref struct {
	n         int
	idleSince time.Time // when n last dropped to zero
}

type idleChannel struct {
	name  string
	since time.Time
}

func newRefcount(linger time.Duration) *refcount {
	return &refcount{linger: linger, chans: map[string]*ref{}}
}

// acquire takes a reference on ch and reports whether ch was not held at all before (not even
// lingering), in which case the caller must subscribe it.
func (rc *refcount) acquire(ch string) (subscribe bool) {
	r, ok := rc.chans[ch]
	if !ok {
		r = &ref{}
		rc.chans[ch] = r
	}
	if r.n == 0 {
		rc.active++
	}
	r.n++
	return !ok
}

// release drops a reference on ch. A channel left without references starts to linger; with
// no linger at all it is removed at once and release reports that the caller must unsubscribe.
// Releasing a channel that holds no reference does nothing.
func (rc *refcount) release(ch string, now time.Time) (unsubscribe bool) {
	r, ok := rc.chans[ch]
	if !ok || r.n == 0 {
		return false
	}
	r.n--
	if r.n > 0 {
		return false
	}
	rc.active--
	if rc.linger <= 0 {
		delete(rc.chans, ch)
		return true
	}
	r.idleSince = now
	rc.idle = append(rc.idle, idleChannel{name: ch, since: now})
	return false
}

// expire removes the channels that have been without references for the linger period and
// calls unsubscribe for each.
func (rc *refcount) expire(now time.Time, unsubscribe func(ch string)) {
	i := 0
	for ; i < len(rc.idle); i++ {
		e := rc.idle[i]
		if now.Sub(e.since) < rc.linger {
			break
		}
		// A channel re-referenced (and perhaps idle again later) since this entry was queued
		// is skipped: a later entry, if any, carries its current idle time.
		if r, ok := rc.chans[e.name]; ok && r.n == 0 && r.idleSince.Equal(e.since) {
			delete(rc.chans, e.name)
			unsubscribe(e.name)
		}
	}
	if i > 0 {
		rest := copy(rc.idle, rc.idle[i:])
		clear(rc.idle[rest:])
		rc.idle = rc.idle[:rest]
	}
}

// held reports whether ch is held, with references or lingering.
func (rc *refcount) held(ch string) bool {
	_, ok := rc.chans[ch]
	return ok
}

// list returns every channel held, with references or lingering.
func (rc *refcount) list() []string {
	out := make([]string, 0, len(rc.chans))
	for ch := range rc.chans {
		out = append(out, ch)
	}
	return out
}

// reset forgets every channel.
func (rc *refcount) reset() {
	clear(rc.chans)
	rc.idle = nil
	rc.active = 0
}
