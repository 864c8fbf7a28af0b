package gwsengine

import (
	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
)

// A token refresh changes the connection's groups. It starts on the connection's read
// goroutine; the backplane work it needs runs elsewhere (Hooks.Join).

// refresh applies a verified token refresh's groups: at once when it adds none, else once
// Hooks.Join is done, on the goroutine that reports it.
func (c *conn) refresh(act session.Action) {
	gen := c.refreshes.Add(1)
	s := c.shard
	s.mu.Lock() // c.id.Groups changes under it (regroup)
	rg := session.NewRegroup(c.id.Groups, act)
	s.mu.Unlock()
	if len(rg.Added) == 0 {
		s.regroup(c, gen, &rg, nil)
		return
	}
	c.e.opts.Hooks.Join(rg.Added, func() {
		var heads []resume.Outcome
		if c.v2 != nil { // the sync of an added group carries its cursor
			heads = c.e.resume.Head(c.e.resume.GroupStreams(rg.Added))
		}
		if !s.regroup(c, gen, &rg, heads) {
			c.e.opts.Hooks.Leave(rg.Added)
		}
	})
}

// regroup makes rg's groups c's and queues the auth_ok behind every frame already queued to
// c, unless c has ended, is closing or has refreshed again since gen; it reports whether it
// did. While it removes groups it holds fanout, so no Deliver that looked c up under a removed
// group before can queue to c after the auth_ok. A v2 connection gets, before the auth_ok,
// unsubscribed for each removed group and a sync for each added one (heads), before any
// message of it.
func (s *shard) regroup(c *conn, gen uint32, rg *session.Regroup, heads []resume.Outcome) bool {
	if rg.Changes() {
		s.fanout.Lock()
	}
	s.mu.Lock()
	ok := s.reg.Has(c) && !c.closing() && c.refreshes.Load() == gen
	if ok && rg.Changes() {
		if v := c.v2; v != nil {
			v.mu.Lock()
			for _, g := range rg.Removed {
				v.st.Forget(registry.Target{Kind: registry.Group, ID: g}.Stream())
			}
			// A message of an added group published before it was added may still be on its
			// way: at or before the cursor its sync announces, it is dropped. Deliveries wait
			// for fanout, which this holds, so the floors are in place before any can come.
			if len(heads) > 0 && v.live.Load() && v.st.Floor(heads) {
				v.checkFloors()
			}
			v.mu.Unlock()
		}
		s.reg.Leave(c, rg.Removed)
		s.reg.Join(c, rg.Added)
		c.id.Groups = rg.Groups
	}
	s.mu.Unlock()
	if ok {
		var more [][]byte
		if c.v2 != nil {
			more = resume.RegroupFrames(rg.Removed, heads)
		}
		// Under the send queue limit like any frame: a client that refreshes and never reads
		// is closed 1013 once its replies would pass it.
		for _, f := range more {
			c.send(gws.OpcodeText, f)
		}
		c.send(gws.OpcodeText, rg.Reply)
	}
	if rg.Changes() {
		s.fanout.Unlock()
	}
	if ok {
		c.e.opts.Hooks.Leave(rg.Removed)
	}
	return ok
}
