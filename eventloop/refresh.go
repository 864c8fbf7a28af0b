//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
)

// A token refresh changes the connection's groups. It is applied on the loop goroutine; the
// backplane work it needs runs elsewhere (Hooks.Join) and comes back as a taskRegroup.

// joined is a refresh waiting for the backplane to have the groups it adds.
type joined struct {
	c     *conn
	rg    session.Regroup
	heads []resume.Outcome // v2: the added groups' streams, read once the backplane has them
}

// refresh applies a verified token refresh's groups: at once when it adds none, else once
// Hooks.Join is done, through the loop's queue so that the loop never waits for the backplane.
// Either way it supersedes a refresh of c still waiting (joining).
func (l *loop) refresh(c *conn, act session.Action) {
	rg := session.NewRegroup(c.id.Groups, act)
	if len(rg.Added) == 0 {
		delete(l.joining, c)
		l.regroup(c, &rg, nil)
		return
	}
	j := &joined{c: c, rg: rg}
	l.joining[c] = j
	v2 := c.flags&flagV2 != 0
	l.e.hooks.Join(rg.Added, func() {
		if v2 { // the sync of an added group carries its cursor: read it here, off the shard
			j.heads = l.e.resume.Head(l.e.resume.GroupStreams(j.rg.Added))
		}
		if !l.submit(task{kind: taskRegroup, join: j}) {
			l.e.hooks.Leave(j.rg.Added) // the shard has stopped: c is gone
		}
	})
}

// regroupJoined applies a refresh whose added groups the backplane now has, unless the
// connection has ended or refreshed again since: then the references Join took go back.
func (l *loop) regroupJoined(j *joined) {
	c := j.c
	latest := l.joining[c] == j
	if latest {
		delete(l.joining, c)
	}
	if !latest || c.flags&flagRegistered == 0 || c.state != stateOpen {
		l.e.hooks.Leave(j.rg.Added)
		return
	}
	l.regroup(c, &j.rg, j.heads)
}

// regroup makes rg's groups the connection's and queues the auth_ok: a message of a removed
// group delivered from now on no longer finds c, and one queued earlier is ahead of the
// auth_ok in c's queue. A v2 connection gets, before the auth_ok, unsubscribed for each
// removed group and a sync for each added one (heads), before any message of it.
func (l *loop) regroup(c *conn, rg *session.Regroup, heads []resume.Outcome) {
	if rg.Changes() {
		if v := l.v2of(c); v != nil {
			for _, g := range rg.Removed {
				v.st.Forget(registry.Target{Kind: registry.Group, ID: g}.Stream())
			}
		}
		l.reg.Leave(c, rg.Removed)
		l.reg.Join(c, rg.Added)
		c.id.Groups = rg.Groups
		l.e.hooks.Leave(rg.Removed)
	}
	if c.flags&flagV2 != 0 {
		for _, f := range resume.RegroupFrames(rg.Removed, heads) {
			l.reply(c, encodeFrame(opText, f))
		}
		l.floorAdded(c, heads)
	}
	if c.state == stateOpen {
		l.reply(c, encodeFrame(opText, rg.Reply))
	}
}
