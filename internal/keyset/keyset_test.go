package keyset

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

type item struct{ name string }

func newItems() *Set[*item] { return New(func(it *item) string { return it.name }) }

// The set answers as a map would through random puts, replacements and deletes, with keys
// drawn from a small space so probe runs grow long and deletes shift them.
func TestSetAgreesWithAMap(t *testing.T) {
	s := newItems()
	want := map[string]*item{}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 200000 {
		k := strconv.Itoa(rng.IntN(3000))
		switch rng.IntN(3) {
		case 0, 1:
			it := &item{name: k}
			s.Put(it)
			want[k] = it
		case 2:
			_, had := want[k]
			if got := s.Delete(k); got != had {
				t.Fatalf("step %d: Delete(%s) = %v, want %v", step, k, got, had)
			}
			delete(want, k)
		}
		if s.Len() != len(want) {
			t.Fatalf("step %d: Len %d, want %d", step, s.Len(), len(want))
		}
		probe := strconv.Itoa(rng.IntN(3000))
		got, ok := s.Get(probe)
		if w := want[probe]; got != w || ok != (w != nil) {
			t.Fatalf("step %d: Get(%s) = %v %v, want %v", step, probe, got, ok, w)
		}
		if gb, _ := s.GetBytes([]byte(probe)); gb != got {
			t.Fatalf("step %d: GetBytes(%s) differs from Get", step, probe)
		}
	}
	n := 0
	for it := range s.All() {
		if want[it.name] != it {
			t.Fatalf("All yields %s, not held", it.name)
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("All yields %d values, want %d", n, len(want))
	}
	s.Clear()
	if _, ok := s.Get("1"); ok || s.Len() != 0 {
		t.Fatal("values left after Clear")
	}
}

func TestLookupAllocatesNothing(t *testing.T) {
	s := newItems()
	for i := range 1000 {
		s.Put(&item{name: "ws:user-" + strconv.Itoa(i)})
	}
	key := []byte("ws:user-500")
	if n := testing.AllocsPerRun(100, func() { _, _ = s.GetBytes(key) }); n != 0 {
		t.Fatalf("GetBytes allocates %.0f times", n)
	}
}

func BenchmarkGetBytes(b *testing.B) {
	s := newItems()
	for i := range 10000 {
		s.Put(&item{name: "ws:user-" + strconv.Itoa(i)})
	}
	key := []byte("ws:user-4321")
	for b.Loop() {
		if _, ok := s.GetBytes(key); !ok {
			b.Fatal("missing")
		}
	}
}
