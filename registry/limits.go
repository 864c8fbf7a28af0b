package registry

import (
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Errors from Limits.
var (
	ErrNodeFull = errors.New("node connection limit reached")
	ErrUserFull = errors.New("per-user connection limit reached")
)

// limitStripes spreads per-user counters over independent locks so concurrent handshakes of
// different users do not contend.
const limitStripes = 64

// Limits enforces MAX_CONNECTIONS and MAX_CONNECTIONS_PER_USER for the whole node (a user's
// connections may sit on different shards). It is safe for concurrent use.
type Limits struct {
	maxNode int64
	maxUser int
	total   atomic.Int64
	seed    maphash.Seed
	stripes [limitStripes]struct {
		mu    sync.Mutex
		users map[string]int
	}
}

// NewLimits returns limits; 0 means no limit.
func NewLimits(maxNode, maxUser int) *Limits {
	l := &Limits{maxNode: int64(maxNode), maxUser: maxUser, seed: maphash.MakeSeed()}
	for i := range l.stripes {
		l.stripes[i].users = map[string]int{}
	}
	return l
}

// ReserveNode takes one node-wide slot, or returns ErrNodeFull. Each success must be paired
// with ReleaseNode.
func (l *Limits) ReserveNode() error {
	n := l.total.Add(1)
	if l.maxNode > 0 && n > l.maxNode {
		l.total.Add(-1)
		return ErrNodeFull
	}
	return nil
}

// ReleaseNode returns a slot taken by ReserveNode.
func (l *Limits) ReleaseNode() { l.total.Add(-1) }

// Total is the number of node slots in use.
func (l *Limits) Total() int { return int(l.total.Load()) }

// ReserveUser takes one of user's slots, or returns ErrUserFull. Each success must be paired
// with ReleaseUser.
func (l *Limits) ReserveUser(user string) error {
	st := &l.stripes[maphash.String(l.seed, user)%limitStripes]
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.users[user]
	if l.maxUser > 0 && n >= l.maxUser {
		return ErrUserFull
	}
	st.users[user] = n + 1
	return nil
}

// ReleaseUser returns a slot taken by ReserveUser.
func (l *Limits) ReleaseUser(user string) {
	st := &l.stripes[maphash.String(l.seed, user)%limitStripes]
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.users[user]; n <= 1 {
		delete(st.users, user)
	} else {
		st.users[user] = n - 1
	}
}

// User returns how many connections user holds.
func (l *Limits) User(user string) int {
	st := &l.stripes[maphash.String(l.seed, user)%limitStripes]
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.users[user]
}
