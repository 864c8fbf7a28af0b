package registry

import "github.com/huleedu/websocket-service/internal/keyset"

// Shard indexes one shard's connections by user, by group and as a whole. It is not safe for
// concurrent use: the engine that owns the shard serialises every call (the epoll engine by
// calling it only from the shard's loop goroutine).
//
// Lookups return the shard's own slices, which stay valid only until the next Add, Remove or
// Lookup; fan-out iterates them in place, so a delivery allocates nothing here.
//
// It is built to cost little per connection, since an idle connection is mostly its index
// entries (docs/DESIGN.md, "Memory per connection"): a user with one connection on the shard
// (nearly every user) is one map entry holding the connection itself, not a list; and a caller
// that keeps each connection's place in the whole list and its user in the connection
// (NewIndexedShard) saves the map from connection to place and holds a user's only connection
// in a slot of 8 bytes rather than a map entry of 24 (internal/keyset).
type Shard[C comparable] struct {
	// A user's connection, while it is the user's only one on the shard: in users, or with
	// NewIndexedShard in byUser.
	users  map[string]C
	byUser *keyset.Set[C]
	multi  map[string][]C // the connections of users with more than one
	groups map[string][]C
	all    []C
	allPos map[C]int      // index of each connection in all, for O(1) removal; nil with place
	place  func(C) *int32 // where the caller keeps c's index in all, plus one (0: not added)
	one    [1]C           // Lookup's answer for a user's only connection
}

// NewShard returns an empty shard index.
func NewShard[C comparable]() *Shard[C] {
	return &Shard[C]{users: map[string]C{}, multi: map[string][]C{}, groups: map[string][]C{}, allPos: map[C]int{}}
}

// NewIndexedShard returns an empty shard index that keeps each connection's place in the
// connection itself: place(c) points at an int32 the caller zeroes before Add and leaves
// alone while c is on the shard; and that finds a user's only connection by the user it
// carries: user(c) is the user c is added under. The zero C is never a connection.
func NewIndexedShard[C comparable](place func(C) *int32, user func(C) string) *Shard[C] {
	return &Shard[C]{byUser: keyset.New(user), multi: map[string][]C{}, groups: map[string][]C{}, place: place}
}

// only returns user's connection when it is the user's only one on the shard.
func (s *Shard[C]) only(user string) (C, bool) {
	if s.byUser != nil {
		return s.byUser.Get(user)
	}
	c, ok := s.users[user]
	return c, ok
}

func (s *Shard[C]) setOnly(user string, c C) {
	if s.byUser != nil {
		s.byUser.Put(c)
		return
	}
	s.users[user] = c
}

func (s *Shard[C]) dropOnly(user string) {
	if s.byUser != nil {
		s.byUser.Delete(user)
		return
	}
	delete(s.users, user)
}

// index returns c's index in all.
func (s *Shard[C]) index(c C) (int, bool) {
	if s.place == nil {
		i, ok := s.allPos[c]
		return i, ok
	}
	i := int(*s.place(c)) - 1
	return i, i >= 0 && i < len(s.all) && s.all[i] == c
}

func (s *Shard[C]) setIndex(c C, i int) {
	if s.place == nil {
		s.allPos[c] = i
		return
	}
	*s.place(c) = int32(i + 1)
}

func (s *Shard[C]) dropIndex(c C) {
	if s.place == nil {
		delete(s.allPos, c)
		return
	}
	*s.place(c) = 0
}

// Add indexes c under user and each group. Adding a connection twice is a caller bug and is
// ignored.
func (s *Shard[C]) Add(c C, user string, groups []string) {
	if _, dup := s.index(c); dup {
		return
	}
	s.setIndex(c, len(s.all))
	s.all = append(s.all, c)
	if list, ok := s.multi[user]; ok {
		s.multi[user] = append(list, c)
	} else if first, ok := s.only(user); ok {
		s.dropOnly(user)
		s.multi[user] = []C{first, c}
	} else {
		s.setOnly(user, c)
	}
	for _, g := range groups {
		s.groups[g] = append(s.groups[g], c)
	}
}

// Remove drops c from every index it was added to; it reports whether c was present, so the
// caller can make unregistration happen exactly once.
func (s *Shard[C]) Remove(c C, user string, groups []string) bool {
	i, ok := s.index(c)
	if !ok {
		return false
	}
	last := len(s.all) - 1
	moved := s.all[last]
	s.all[i] = moved
	s.setIndex(moved, i)
	var zero C
	s.all[last] = zero
	s.all = s.all[:last]
	s.dropIndex(c)
	if only, ok := s.only(user); ok {
		if only == c {
			s.dropOnly(user)
		}
	} else {
		removeFrom(s.multi, user, c)
		if list := s.multi[user]; len(list) == 1 {
			delete(s.multi, user)
			s.setOnly(user, list[0])
		}
	}
	for _, g := range groups {
		removeFrom(s.groups, g, c)
	}
	return true
}

// Join indexes c, already added, under each of groups as well (a token refresh that added
// them); c must not be indexed under any of them yet.
func (s *Shard[C]) Join(c C, groups []string) {
	if !s.Has(c) {
		return
	}
	for _, g := range groups {
		s.groups[g] = append(s.groups[g], c)
	}
}

// Leave drops c from each of groups (a token refresh that removed them); the caller passes
// only groups c was indexed under, as Remove's caller does.
func (s *Shard[C]) Leave(c C, groups []string) {
	for _, g := range groups {
		removeFrom(s.groups, g, c)
	}
}

// Has reports whether c is on the shard.
func (s *Shard[C]) Has(c C) bool {
	_, ok := s.index(c)
	return ok
}

// removeFrom deletes c from m[key]. Per-user and per-group lists are short (a user's tabs, a
// classroom), so a scan beats keeping a position map per list.
func removeFrom[C comparable](m map[string][]C, key string, c C) {
	list := m[key]
	for i, e := range list {
		if e == c {
			last := len(list) - 1
			list[i] = list[last]
			var zero C
			list[last] = zero
			list = list[:last]
			break
		}
	}
	if len(list) == 0 {
		delete(m, key)
		return
	}
	m[key] = list
}

// Lookup returns the connections a target addresses on this shard.
func (s *Shard[C]) Lookup(t Target) []C {
	switch t.Kind {
	case User:
		if c, ok := s.only(t.ID); ok {
			s.one[0] = c
			return s.one[:]
		}
		return s.multi[t.ID]
	case Group:
		return s.groups[t.ID]
	case Broadcast:
		return s.all
	}
	return nil
}

// All returns every connection of the shard.
func (s *Shard[C]) All() []C { return s.all }

// Len is the number of connections on the shard.
func (s *Shard[C]) Len() int { return len(s.all) }
