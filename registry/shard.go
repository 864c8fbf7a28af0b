package registry

// Shard indexes one shard's connections by user, by group and as a whole. It is not safe for
// concurrent use: the engine that owns the shard serialises every call (the epoll engine by
// calling it only from the shard's loop goroutine).
//
// Lookups return the shard's own slices, which stay valid only until the next Add or Remove;
// fan-out iterates them in place, so a delivery allocates nothing here.
type Shard[C comparable] struct {
	users  map[string][]C
	groups map[string][]C
	all    []C
	allPos map[C]int // index of each connection in all, for O(1) removal
}

// NewShard returns an empty shard index.
func NewShard[C comparable]() *Shard[C] {
	return &Shard[C]{users: map[string][]C{}, groups: map[string][]C{}, allPos: map[C]int{}}
}

// Add indexes c under user and each group. Adding a connection twice is a caller bug and is
// ignored.
func (s *Shard[C]) Add(c C, user string, groups []string) {
	if _, dup := s.allPos[c]; dup {
		return
	}
	s.allPos[c] = len(s.all)
	s.all = append(s.all, c)
	s.users[user] = append(s.users[user], c)
	for _, g := range groups {
		s.groups[g] = append(s.groups[g], c)
	}
}

// Remove drops c from every index it was added to; it reports whether c was present, so the
// caller can make unregistration happen exactly once.
func (s *Shard[C]) Remove(c C, user string, groups []string) bool {
	i, ok := s.allPos[c]
	if !ok {
		return false
	}
	last := len(s.all) - 1
	moved := s.all[last]
	s.all[i] = moved
	s.allPos[moved] = i
	var zero C
	s.all[last] = zero
	s.all = s.all[:last]
	delete(s.allPos, c)
	removeFrom(s.users, user, c)
	for _, g := range groups {
		removeFrom(s.groups, g, c)
	}
	return true
}

// Join indexes c, already added, under each of groups as well (a token refresh that added
// them); c must not be indexed under any of them yet.
func (s *Shard[C]) Join(c C, groups []string) {
	if _, ok := s.allPos[c]; !ok {
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
	_, ok := s.allPos[c]
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
		return s.users[t.ID]
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
