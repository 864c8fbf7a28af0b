// Package keyset is a set of values found by a string key that each value carries (a
// channel's name in its state, a user id in its connection). It is for the indexes an idle
// connection pays for (docs/DESIGN.md, "Memory per connection"): a Go map keyed by the
// string holds the string's header again in every slot, 24 bytes with a pointer value, where
// this table holds the value alone, 8 bytes for a pointer. It is not for general use: it never
// shrinks, and it is not safe for concurrent use.
package keyset

import (
	"hash/maphash"
	"iter"
)

// Set holds values of type E, none of them E's zero value, each under key(e); two values
// never share a key. It is an open-addressing table with linear probing, at most three
// quarters full; deleting shifts the following entries back, so no tombstones accumulate.
type Set[E comparable] struct {
	key   func(E) string
	seed  maphash.Seed
	slots []E // a power of two long, or empty
	n     int
}

// New returns an empty set whose values carry their key as key(e).
func New[E comparable](key func(E) string) *Set[E] {
	return &Set[E]{key: key, seed: maphash.MakeSeed()}
}

// Len is the number of values held.
func (s *Set[E]) Len() int { return s.n }

// Get returns the value held under key.
func (s *Set[E]) Get(key string) (E, bool) { return find(s, maphash.String(s.seed, key), key) }

// GetBytes is Get for a key held in bytes; it allocates nothing.
func (s *Set[E]) GetBytes(key []byte) (E, bool) { return find(s, maphash.Bytes(s.seed, key), key) }

// find returns the value held under key, whose hash is h.
func find[E comparable, K string | []byte](s *Set[E], h uint64, key K) (E, bool) {
	if s.n == 0 {
		var zero E
		return zero, false
	}
	i, ok := slot(s, h, key)
	return s.slots[i], ok
}

// slot probes for key, whose hash is h, from its home slot: it returns the slot holding it
// (true), or the empty slot that ends its run (false). The table must have a slot.
func slot[E comparable, K string | []byte](s *Set[E], h uint64, key K) (int, bool) {
	var zero E
	mask := len(s.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		switch e := s.slots[i]; {
		case e == zero:
			return i, false
		case s.key(e) == string(key):
			return i, true
		}
	}
}

// Put holds e, replacing the value held under the same key if any.
func (s *Set[E]) Put(e E) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.grow()
	}
	if s.insert(e) {
		s.n++
	}
}

// insert places e in the table, which has room, and reports whether it is a new key.
func (s *Set[E]) insert(e E) bool {
	key := s.key(e)
	i, held := slot(s, maphash.String(s.seed, key), key)
	s.slots[i] = e
	return !held
}

func (s *Set[E]) grow() {
	old := s.slots
	s.slots = make([]E, max(8, 2*len(old)))
	var zero E
	for _, e := range old {
		if e != zero {
			s.insert(e)
		}
	}
}

// Delete drops the value held under key and reports whether there was one.
func (s *Set[E]) Delete(key string) bool {
	var zero E
	if s.n == 0 {
		return false
	}
	i, held := slot(s, maphash.String(s.seed, key), key)
	if !held {
		return false
	}
	mask := len(s.slots) - 1
	// Shift back every following entry of the run that may move into the hole: one whose
	// home slot is not cyclically within (hole, its slot].
	for j := (i + 1) & mask; s.slots[j] != zero; j = (j + 1) & mask {
		home := int(maphash.String(s.seed, s.key(s.slots[j]))) & mask
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = zero
	s.n--
	return true
}

// All yields every value held, in no particular order. The set must not change while it
// is ranged over.
func (s *Set[E]) All() iter.Seq[E] {
	return func(yield func(E) bool) {
		var zero E
		for _, e := range s.slots {
			if e != zero && !yield(e) {
				return
			}
		}
	}
}

// Clear drops every value, keeping the table's room.
func (s *Set[E]) Clear() {
	clear(s.slots)
	s.n = 0
}
