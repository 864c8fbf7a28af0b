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
//
// A user's count is kept under a 64-bit hash of the user id (seeded per process), not the id:
// a map entry of 16 bytes without pointers instead of 24 with one, for every connected user
// (docs/DESIGN.md, "Memory per connection"). Two users whose ids hash alike would share one
// count, so one of them could be refused early: with 100,000 users the chance that any pair
// does is about 3·10⁻¹⁰, and the seed keeps a client from choosing ids that collide.
type Limits struct {
	maxNode int64
	maxUser int
	total   atomic.Int64
	seed    maphash.Seed
	stripes [limitStripes]limitStripe
}

// limitStripe is the counts of the users whose hash falls on it.
type limitStripe struct {
	mu    sync.Mutex
	users map[uint64]int32 // a user's connections are far fewer than 2^31
}

// NewLimits returns limits; 0 means no limit.
func NewLimits(maxNode, maxUser int) *Limits {
	l := &Limits{maxNode: int64(maxNode), maxUser: maxUser, seed: maphash.MakeSeed()}
	for i := range l.stripes {
		l.stripes[i].users = map[uint64]int32{}
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
	key, st := l.user(user)
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.users[key]
	if l.maxUser > 0 && int(n) >= l.maxUser {
		return ErrUserFull
	}
	st.users[key] = n + 1
	return nil
}

// ReleaseUser returns a slot taken by ReserveUser.
func (l *Limits) ReleaseUser(user string) {
	key, st := l.user(user)
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.users[key]; n <= 1 {
		delete(st.users, key)
	} else {
		st.users[key] = n - 1
	}
}

// User returns how many connections user holds.
func (l *Limits) User(user string) int {
	key, st := l.user(user)
	st.mu.Lock()
	defer st.mu.Unlock()
	return int(st.users[key])
}

// user returns the key of user's count and the stripe that holds it.
func (l *Limits) user(user string) (uint64, *limitStripe) {
	h := maphash.String(l.seed, user)
	return h, &l.stripes[h%limitStripes]
}
