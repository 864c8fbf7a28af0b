package gwsengine

import (
	"sync"
	"sync/atomic"

	"github.com/huleedu/websocket-service/registry"
)

// shard is one slice of the engine's connections. Its registry is guarded by mu; n mirrors the
// registry's size so that placement and the metrics gauge read it without the lock. The
// ticker goroutine (heartbeat.go) owns due and the nextPing of every connection on the shard.
type shard struct {
	index int
	// fanout is held shared by Deliver from looking a target up to queueing the frame to it,
	// and exclusively by a refresh that removes groups (refresh.go), so that a frame for a
	// removed group cannot be queued behind the auth_ok from a stale lookup.
	fanout sync.RWMutex
	mu     sync.Mutex
	reg    *registry.Shard[*conn] // guarded by mu
	n      atomic.Int64

	due []duty // owned by the ticker goroutine
}

func newShard(index int) *shard {
	return &shard{index: index, reg: registry.NewShard[*conn]()}
}

func (s *shard) add(c *conn) {
	s.mu.Lock()
	s.reg.Add(c, c.id.User, c.id.Groups)
	s.n.Store(int64(s.reg.Len()))
	s.mu.Unlock()
}

// remove drops c and reports whether it was there, which makes the release of a connection
// happen exactly once.
func (s *shard) remove(c *conn) bool {
	s.mu.Lock()
	ok := s.reg.Remove(c, c.id.User, c.id.Groups)
	s.n.Store(int64(s.reg.Len()))
	s.mu.Unlock()
	return ok
}

// lookup appends the connections t addresses to dst. The registry's own slices are only valid
// under the lock, so a delivery copies them and writes to sockets after releasing it.
func (s *shard) lookup(t registry.Target, dst []*conn) []*conn {
	s.mu.Lock()
	dst = append(dst, s.reg.Lookup(t)...)
	s.mu.Unlock()
	return dst
}

// all appends every connection of the shard to dst.
func (s *shard) all(dst []*conn) []*conn {
	s.mu.Lock()
	dst = append(dst, s.reg.All()...)
	s.mu.Unlock()
	return dst
}
