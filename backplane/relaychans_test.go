package backplane

import (
	"log/slog"
	"testing"
	"time"
)

// A relay that never connects: what it holds and wants is bookkeeping alone.
func offlineRelay(linger time.Duration) *relay {
	return newRelay(0, "offline", false, linger, nil, newCollector(), noEvents{}, slog.New(slog.DiscardHandler))
}

// wanted reports whether ch is held (its state wants it) and its references.
func wanted(r *relay, ch string) (bool, int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, _ := r.chans.Get(ch)
	if st == nil {
		return false, 0
	}
	return st.want, st.refs.n
}

// lingersUntil checks that ch, held by r without references, is still held just before end
// and no longer at end.
func lingersUntil(t *testing.T, r *relay, ch string, end time.Time) {
	t.Helper()
	r.expire(end.Add(-time.Millisecond))
	if w, _ := wanted(r, ch); !w {
		t.Fatalf("%s expired before %s", ch, end.Format(time.StampMilli))
	}
	r.expire(end)
	if w, _ := wanted(r, ch); w {
		t.Fatalf("%s still held at %s, after its linger", ch, end.Format(time.StampMilli))
	}
}

func TestRelayHoldsAChannelWhileReferencedAndLingersAfterTheLast(t *testing.T) {
	r := offlineRelay(time.Second)
	t0 := time.Now()
	if first := r.acquire([]string{"a", "b"}); first != 2 {
		t.Fatalf("first references: %d, want 2", first)
	}
	if first := r.acquire([]string{"a"}); first != 0 {
		t.Fatal("a second reference counted as a first")
	}
	if last := r.release([]string{"a", "b", "b", "zz"}, t0); last != 1 {
		t.Fatalf("last references dropped: %d, want 1 (b; a keeps one, b's extra and zz are ignored)", last)
	}
	if w, n := wanted(r, "b"); !w || n != 0 {
		t.Fatalf("b: wanted %v with %d references, want lingering", w, n)
	}
	r.expire(t0.Add(500 * time.Millisecond))
	if w, _ := wanted(r, "b"); !w {
		t.Fatal("b expired before the linger")
	}
	if first := r.acquire([]string{"b"}); first != 1 {
		t.Fatal("a lingering channel taken again is a first reference")
	}
	r.expire(t0.Add(2 * time.Second))
	if w, n := wanted(r, "b"); !w || n != 1 {
		t.Fatal("a re-referenced channel expired")
	}
	r.release([]string{"b"}, t0.Add(3*time.Second))
	lingersUntil(t, r, "b", t0.Add(4*time.Second)) // from the last release, not the first
	if w, n := wanted(r, "a"); !w || n != 1 {
		t.Fatalf("a: wanted %v with %d references, want held with 1", w, n)
	}
}

func TestRelayWithoutLingerLetsAChannelGoWithItsLastReference(t *testing.T) {
	r := offlineRelay(-1)
	r.acquire([]string{"a"})
	if last := r.release([]string{"a"}, time.Now()); last != 1 {
		t.Fatal("the last reference was not reported")
	}
	if w, _ := wanted(r, "a"); w {
		t.Fatal("without a linger a channel is unsubscribed with its last reference")
	}
}

// A cluster rebuild moves a channel to another relay with its references; a lingering
// channel lingers there from the move, and the entry it left on its old relay never
// expires it there early.
func TestChannelsMoveBetweenRelaysWithTheirReferences(t *testing.T) {
	from, to := offlineRelay(time.Second), offlineRelay(time.Second)
	t0 := time.Now()
	from.acquire([]string{"held", "held", "idle"})
	from.release([]string{"idle"}, t0)
	moving := from.held()
	if len(moving) != 2 {
		t.Fatalf("held %v, want both channels", moving)
	}
	names := make([]string, len(moving))
	for i, h := range moving {
		names[i] = h.name
	}
	to.take(moving, true, t0.Add(900*time.Millisecond))
	from.handOff(names)
	if w, n := wanted(to, "held"); !w || n != 2 {
		t.Fatalf("moved channel: wanted %v with %d references, want 2", w, n)
	}
	if w, _ := wanted(from, "held"); w {
		t.Fatal("the old relay still wants a moved channel")
	}
	to.mu.Lock()
	held, _ := to.chans.Get("held")
	resumes := held.resume
	to.mu.Unlock()
	if !resumes {
		t.Fatal("a moved channel must resume on its new relay")
	}
	lingersUntil(t, to, "idle", t0.Add(1900*time.Millisecond)) // from the move

	// Moved back and held again on the old relay: the entry its first linger left there is
	// stale and must not cut the new linger short.
	from.mu.Lock()
	from.chans.Clear() // the unsubscribes were confirmed
	from.dirty = from.dirty[:0]
	from.mu.Unlock()
	from.acquire([]string{"idle"})
	from.release([]string{"idle"}, t0.Add(900*time.Millisecond))
	from.expire(t0.Add(1200 * time.Millisecond))
	if w, _ := wanted(from, "idle"); !w {
		t.Fatal("a stale lingering entry expired a channel held again")
	}
}
