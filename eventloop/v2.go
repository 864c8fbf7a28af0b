//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/session"
)

// A notifications.v2 connection (docs/PROTOCOL.md) carries a v2conn. Until its resume is done
// its deliveries are held in it (counted against the send queue limit with what is queued);
// the history reads run on the resume Service's goroutines and come back as a taskResumed;
// the replay is then queued a chunk at a time, each once the socket has taken the last one
// (flush calls pump), so a long replay never sits in memory per connection.

// v2conn is a v2 connection's resume, in loop.resumes while the connection has flagResuming
// or flagFloor. Owned by the loop goroutine.
type v2conn struct {
	st         resume.State
	waitAt     uint32 // tick by which the resume frame must have come; 0 once it has (or the wait is over)
	floorUntil uint32 // with flagFloor: tick until which deliveries are checked with st.Stale
}

// resumed carries a connection's history verdicts from the resume Service to its shard.
type resumed struct {
	c       *conn
	v2      *v2conn
	out     []resume.Outcome
	release func()
}

// adoptV2 makes c a v2 connection waiting for its resume frame.
func (l *loop) adoptV2(c *conn) {
	c.flags |= flagV2 | flagResuming
	v := &v2conn{waitAt: l.now + max(ticksFor(l.e.resume.Wait(), l.tick), 1)}
	l.e.resume.Attach(&v.st)
	l.resumes[c] = v
}

// v2of is c's resume, nil when it has none under way (floors left over do not count).
func (l *loop) v2of(c *conn) *v2conn {
	if c.flags&flagResuming == 0 {
		return nil
	}
	return l.resumes[c]
}

// resumeDone ends c's resume: it is live, and for resume.FloorTime its deliveries are
// checked against what the resume covered.
func (l *loop) resumeDone(c *conn) {
	c.flags &^= flagResuming
	if v := l.resumes[c]; v != nil && v.st.Floors() {
		c.flags |= flagFloor
		v.floorUntil = l.now + ticksFor(resume.FloorTime, l.tick)
		return
	}
	delete(l.resumes, c)
}

// floorAdded checks, for resume.FloorTime, deliveries of the streams a refresh added against
// the cursors their syncs announced: a message published before its group was added may still
// be on its way, and at or before that cursor it is dropped. A connection still resuming is
// left alone (its resume's own verdicts decide what it gets).
func (l *loop) floorAdded(c *conn, heads []resume.Outcome) {
	if c.flags&flagResuming != 0 || len(heads) == 0 {
		return
	}
	v := l.resumes[c]
	if v == nil {
		v = &v2conn{st: resume.Floors(heads)}
	} else {
		v.st.Floor(heads)
	}
	if !v.st.Floors() {
		return
	}
	l.resumes[c] = v
	c.flags |= flagFloor
	v.floorUntil = l.now + ticksFor(resume.FloorTime, l.tick)
}

// dropFloors ends c's checks of stale deliveries.
func (l *loop) dropFloors(c *conn) {
	c.flags &^= flagFloor
	delete(l.resumes, c)
}

// holdOrDrop takes a delivery's v2 frame for c while its resume is under way (held, and over
// the send queue limit with what it holds c is doomed) or just done (dropped when stale); it
// reports whether it took it, else the caller queues it.
func (l *loop) holdOrDrop(c *conn, stream string, pos history.Position, frame []byte) bool {
	v := l.resumes[c]
	if c.flags&flagResuming != 0 {
		if l.waiting(c)+v.st.Hold(stream, pos, frame) > l.sendLimit {
			l.doom(c)
		}
		return true
	}
	if l.now > v.floorUntil {
		l.dropFloors(c)
		return false
	}
	stale := v.st.Stale(stream, pos)
	if !v.st.Floors() {
		l.dropFloors(c)
	}
	return stale
}

// onResumeFrame handles a v2 connection's first text message: a resume frame starts the
// resume and is consumed (true); anything else starts an empty resume and is then handled as
// usual (false). A later resume frame is ignored (consumed, unanswered).
func (l *loop) onResumeFrame(c *conn, text []byte) bool {
	if c.flags&flagV2 == 0 {
		return false
	}
	cursors, ok := resume.ParseResume(text)
	if v := l.v2of(c); v == nil || !v.st.Awaiting() {
		return ok // a later resume is ignored
	}
	l.startResume(c, cursors)
	return ok
}

// startResume reads c's streams' history after cursors, off the loop goroutine.
func (l *loop) startResume(c *conn, cursors map[string]string) {
	v := l.v2of(c)
	if v == nil || !v.st.Begin() {
		return
	}
	v.waitAt = 0
	svc := l.e.resume
	svc.Read(svc.Streams(c.id.User, c.id.Groups), cursors, func(out []resume.Outcome, release func()) {
		if !l.submit(task{kind: taskResumed, resumed: &resumed{c: c, v2: v, out: out, release: release}}) {
			release() // the shard has stopped: c is gone
		}
	})
}

// applyResumed starts c's replay, unless c has ended meanwhile.
func (l *loop) applyResumed(r *resumed) {
	c := r.c
	if c.state != stateOpen || l.v2of(c) != r.v2 || !r.v2.st.Ready(r.out, r.release) {
		r.release()
		return
	}
	l.pump(c)
}

// pump queues c's next chunk of replay while its queue is below half the send queue limit,
// and reports whether it queued anything.
func (l *loop) pump(c *conn) bool {
	v := l.v2of(c)
	if v == nil || !v.st.Replaying() || c.state != stateOpen {
		return false
	}
	budget := l.sendLimit/2 - c.queued
	if budget <= 0 {
		return false
	}
	frames, done := v.st.Next(l.chunk[:0], budget, frameOverhead, wrapText)
	if done {
		l.resumeDone(c)
	}
	for i, f := range frames {
		l.push(c, f)
		frames[i] = nil
	}
	l.chunk = frames[:0]
	l.e.metrics.MessagesSent.Add(len(frames))
	return len(frames) > 0
}

func wrapText(payload []byte) []byte { return encodeFrame(opText, payload) }

// endV2 frees what a v2 connection's resume holds: it has ended.
func (l *loop) endV2(c *conn) {
	if v := l.resumes[c]; v != nil {
		v.st.Abort()
		c.flags &^= flagResuming | flagFloor
		delete(l.resumes, c)
	}
}

// v2Reply is what c answers act with: v2's echo frame for an echo.
func v2Reply(c *conn, act *session.Action, text []byte) []byte {
	if c.flags&flagV2 == 0 {
		return act.Reply
	}
	return session.V2Reply(act, text)
}
