//go:build linux

package eventloop

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func newTestWheel(slots, entries int) (*wheel, []timerNode) {
	nodes := make([]timerNode, entries)
	for i := range nodes {
		nodes[i].clear()
	}
	return newWheel(slots, 0, func(id int32) *timerNode { return &nodes[id] }), nodes
}

func TestWheelFiresAtTheDeadline(t *testing.T) {
	w, _ := newTestWheel(8, 4)
	w.schedule(0, 3)
	w.schedule(1, 3)
	w.schedule(2, 20) // more than one revolution ahead, same slot as 4 and 12
	w.schedule(3, 4)
	if got := w.expire(2); len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	if got := sorted(w.expire(3)); !slices.Equal(got, []int32{0, 1}) {
		t.Fatalf("tick 3 fired %v", got)
	}
	if got := w.expire(4); !slices.Equal(got, []int32{3}) {
		t.Fatalf("tick 4 fired %v", got)
	}
	if got := w.expire(12); len(got) != 0 {
		t.Fatalf("fired a later revolution early: %v", got)
	}
	if next, ok := w.next(); !ok || next%8 != 20%8 {
		t.Fatalf("next = %d, %v", next, ok)
	}
	if got := w.expire(20); !slices.Equal(got, []int32{2}) {
		t.Fatalf("tick 20 fired %v", got)
	}
	if w.len() != 0 {
		t.Fatalf("len %d after everything fired", w.len())
	}
	if _, ok := w.next(); ok {
		t.Fatal("next on an empty wheel")
	}
}

func TestWheelRescheduleAndCancel(t *testing.T) {
	w, nodes := newTestWheel(16, 3)
	w.schedule(0, 5)
	w.schedule(1, 5)
	w.schedule(2, 5)
	w.schedule(1, 9) // move the middle of a slot list
	w.cancel(0)
	w.cancel(0) // twice is harmless
	if got := w.expire(5); !slices.Equal(got, []int32{2}) {
		t.Fatalf("tick 5 fired %v", got)
	}
	if nodes[2].scheduled() {
		t.Fatal("fired entry still linked")
	}
	w.schedule(2, 1) // in the past: fires at the next tick
	if got := sorted(w.expire(9)); !slices.Equal(got, []int32{1, 2}) {
		t.Fatalf("tick 9 fired %v", got)
	}
}

func TestWheelLongStallFiresEverythingDue(t *testing.T) {
	w, _ := newTestWheel(8, 100)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range int32(100) {
		w.schedule(i, uint32(rng.IntN(50)))
	}
	if got := w.expire(1000); len(got) != 100 {
		t.Fatalf("fired %d of 100 after a stall", len(got))
	}
}

func TestWheelMatchesNaiveModel(t *testing.T) {
	const n = 64
	w, _ := newTestWheel(16, n)
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[int32]uint32{}
	for now := uint32(0); now < 500; now++ {
		for range 3 {
			id := int32(rng.IntN(n))
			switch rng.IntN(3) {
			case 0, 1:
				at := now + uint32(rng.IntN(60))
				w.schedule(id, at)
				model[id] = at
			case 2:
				w.cancel(id)
				delete(model, id)
			}
		}
		var want []int32
		for id, at := range model {
			if at <= now {
				want = append(want, id)
				delete(model, id)
			}
		}
		if got := sorted(w.expire(now)); !slices.Equal(got, sorted(want)) {
			t.Fatalf("tick %d: fired %v, want %v", now, got, sorted(want))
		}
		if w.len() != len(model) {
			t.Fatalf("tick %d: len %d, want %d", now, w.len(), len(model))
		}
	}
}

func sorted(ids []int32) []int32 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func BenchmarkWheelScheduleExpire(b *testing.B) {
	const n = 10000
	w, _ := newTestWheel(4096, n)
	b.ReportAllocs()
	now := uint32(0)
	for b.Loop() {
		for id := range int32(n) {
			w.schedule(id, now+1+uint32(id%300))
		}
		now += 301
		w.expire(now)
	}
}
