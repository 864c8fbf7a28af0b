package gwsengine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
)

// A notifications.v2 connection (docs/PROTOCOL.md) carries a v2conn. Until its resume is done
// Deliver holds its frames in it (counted against the send queue limit with what gws has
// queued). The history reads run on a resume Service goroutine, which then queues the replay
// to gws's write queue a chunk at a time, each once the previous one has been written, so a
// long replay never sits in memory per connection; the held frames follow, and the
// connection goes live.

// v2conn is the v2 part of a connection, nil for v1. st and timer are guarded by mu; live is
// set under mu once st is done, and read without it on the delivery path.
type v2conn struct {
	live   atomic.Bool
	floors atomic.Bool // live, and deliveries are still checked with st.Stale (resume.FloorTime)
	mu     sync.Mutex
	st     resume.State
	timer  *time.Timer
	floorN uint32 // which checkFloors timer is the latest; under mu
}

// checkFloors starts (or restarts) resume.FloorTime of Stale checks; v.mu is held. An
// earlier timer that fires later finds itself superseded and leaves the checks alone.
func (v *v2conn) checkFloors() {
	v.floorN++
	n := v.floorN
	v.floors.Store(true)
	time.AfterFunc(resume.FloorTime, func() {
		v.mu.Lock()
		if v.floorN == n {
			v.st.DropFloors()
			v.floors.Store(false)
		}
		v.mu.Unlock()
	})
}

// acceptV2 makes c a v2 connection waiting for its resume frame, at most the Service's wait.
func (c *conn) acceptV2() {
	v := &v2conn{}
	c.e.resume.Attach(&v.st)
	c.v2 = v
	v.mu.Lock()
	v.timer = time.AfterFunc(c.e.resume.Wait(), func() { c.startResume(nil) })
	v.mu.Unlock()
}

// onResumeFrame handles a v2 connection's first text message: a resume frame starts the
// resume and is consumed (true); anything else starts an empty resume and is then handled as
// usual (false). A later resume frame is ignored (consumed, unanswered).
func (c *conn) onResumeFrame(text []byte) bool {
	v := c.v2
	if v == nil {
		return false
	}
	cursors, ok := resume.ParseResume(text)
	awaiting := false
	if !v.live.Load() {
		v.mu.Lock()
		awaiting = v.st.Awaiting()
		v.mu.Unlock()
	}
	if !awaiting {
		return ok // a later resume is ignored
	}
	c.startResume(cursors)
	return ok
}

// startResume reads c's streams' history after cursors; the replay runs on the goroutine that
// reports the reads.
func (c *conn) startResume(cursors map[string]string) {
	v := c.v2
	v.mu.Lock()
	begun := v.st.Begin()
	if begun {
		v.timer.Stop()
	}
	v.mu.Unlock()
	if !begun {
		return
	}
	svc := c.e.resume
	c.shard.mu.Lock() // c.id.Groups changes under it (regroup)
	groups := c.id.Groups
	c.shard.mu.Unlock()
	svc.Read(svc.Streams(c.id.User, groups), cursors, c.replay)
}

// replay queues c's replay, sync frames and held frames, a chunk at a time, waiting for gws to
// have written each before the next; then c is live.
func (c *conn) replay(out []resume.Outcome, release func()) {
	v := c.v2
	v.mu.Lock()
	ok := v.st.Ready(out, release)
	v.mu.Unlock()
	if !ok {
		release()
		return
	}
	budget := int(c.e.sendQueueLimit / 2)
	drained := make(chan struct{}, 1)
	var frames [][]byte
	for {
		v.mu.Lock()
		if c.closing() || c.wire.closed.Load() {
			v.st.Abort()
			v.mu.Unlock()
			return
		}
		var done bool
		frames, done = v.st.Next(frames[:0], budget, frameOverhead, same)
		for i, f := range frames {
			c.send(gws.OpcodeText, f)
			frames[i] = nil
		}
		if done {
			if v.st.Floors() {
				v.checkFloors()
			}
			v.live.Store(true)
			v.mu.Unlock()
			return
		}
		c.socket.Async(func() { drained <- struct{}{} })
		v.mu.Unlock()
		select {
		case <-drained:
		case <-c.done:
			v.mu.Lock()
			v.st.Abort()
			v.mu.Unlock()
			return
		}
	}
}

func same(b []byte) []byte { return b }

// holdOrDrop takes a delivery's v2 frame for c while its resume is under way (held; over the
// send queue limit with what it holds, c is closed 1013) or just done (dropped when stale: the
// resume covered it); it reports whether it took it, else the caller queues it.
func (c *conn) holdOrDrop(stream string, pos history.Position, frame []byte) bool {
	v := c.v2
	v.mu.Lock()
	if v.live.Load() {
		stale := v.floors.Load() && v.st.Stale(stream, pos)
		if !v.st.Floors() {
			v.floors.Store(false)
		}
		v.mu.Unlock()
		return stale
	}
	held := v.st.Hold(stream, pos, frame)
	v.mu.Unlock()
	if !c.out.fits(int64(held), c.e.sendQueueLimit) {
		c.slow()
	}
	return true
}

// endV2 frees what c's resume holds: c has ended.
func (c *conn) endV2() {
	if v := c.v2; v != nil {
		v.mu.Lock()
		if v.timer != nil {
			v.timer.Stop()
		}
		v.st.Begin() // a timer that fired anyway finds nothing to start
		v.st.Abort()
		v.mu.Unlock()
	}
}

// reply is what c answers act with: v2's echo frame for an echo.
func (c *conn) reply(act *session.Action, text []byte) []byte {
	if c.v2 == nil {
		return act.Reply
	}
	return session.V2Reply(act, text)
}
