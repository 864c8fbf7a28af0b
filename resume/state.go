package resume

import (
	"slices"
	"time"

	"github.com/huleedu/websocket-service/history"
)

// phase is where a connection is in its resume.
type phase uint8

const (
	awaiting  phase = iota // no resume frame yet
	reading                // the Service is reading its streams' history
	replaying              // the engine is taking frames from Next
	live                   // done: deliveries go straight to the socket
)

// held is one delivery that arrived before the connection was live.
type held struct {
	stream string
	pos    history.Position
	frame  []byte // shared with every other v2 connection of the delivery
}

// State is one v2 connection's resume. Its zero value awaits the resume frame. It is not safe
// for concurrent use: the engine calls it where it serialises the connection's work.
type State struct {
	phase     phase
	held      []held
	heldBytes int
	out       []Outcome
	release   func()
	cache     *replayCache // the Service's, shared by every connection
	forgotten []string     // streams a refresh removed before the verdicts came (Forget)
	// The iterator of Next: stream si, its entry ei (len(entries) = its sync next), then
	// held item hi.
	si, ei, hi int
}

// Live reports whether the resume is over: deliveries go straight to the socket.
func (s *State) Live() bool { return s.phase == live }

// Awaiting reports whether the resume frame has not been handled yet.
func (s *State) Awaiting() bool { return s.phase == awaiting }

// Begin marks the resume frame handled (or the wait for it over); it reports false when it
// already was.
func (s *State) Begin() bool {
	if s.phase != awaiting {
		return false
	}
	s.phase = reading
	return true
}

// Hold keeps a delivery's frame until the connection is live and returns the bytes held.
func (s *State) Hold(stream string, pos history.Position, frame []byte) int {
	s.held = append(s.held, held{stream: stream, pos: pos, frame: frame})
	s.heldBytes += len(frame)
	return s.heldBytes
}

// HeldBytes is what the connection holds and has not handed to the engine yet.
func (s *State) HeldBytes() int { return s.heldBytes }

// Ready starts the replay with the Service's verdicts; release frees the Service's slot once
// the replay is done (or Abort). It reports false, and takes nothing, unless the State was
// reading (the connection may have ended meanwhile).
func (s *State) Ready(out []Outcome, release func()) bool {
	if s.phase != reading {
		return false
	}
	for _, f := range s.forgotten {
		out = slices.DeleteFunc(out, func(o Outcome) bool { return o.Stream == f })
	}
	s.forgotten = nil
	s.out, s.release = out, release
	s.phase = replaying
	return true
}

// Replaying reports whether Next has frames to give.
func (s *State) Replaying() bool { return s.phase == replaying }

// Abort ends a resume whose connection has ended, freeing its slot and what it holds.
func (s *State) Abort() {
	s.free()
	s.held, s.out = nil, nil
	s.phase = live
}

func (s *State) free() {
	if s.release != nil {
		s.release()
		s.release = nil
	}
}

// Next appends to frames the next frames to send, in order, until about budget bytes, and
// reports whether the resume is done (the connection is then live). Each frame counts its
// length plus overhead (what the engine's queue holds per frame besides its bytes) against
// budget. wrap turns a v2 frame it builds (replay, sync) into what the engine queues; held
// frames are queued as they were held. Per stream: its replayed
// messages, then its sync; then every held delivery in arrival order, except those at or
// before their stream's synced position, which the replay or the client already has.
func (s *State) Next(frames [][]byte, budget, overhead int, wrap func([]byte) []byte) ([][]byte, bool) {
	if s.phase != replaying {
		return frames, s.phase == live
	}
	for budget > 0 && s.si < len(s.out) {
		o := &s.out[s.si]
		if s.ei < len(o.Result.Entries) {
			e := &o.Result.Entries[s.ei]
			var f []byte
			if s.cache != nil {
				f = s.cache.frame(o.Stream, e, wrap)
			} else {
				f = wrap(MessageFrame(o.Stream, e.Position, e.Payload))
			}
			frames = append(frames, f)
			budget -= len(f) + overhead
			s.ei++
			continue
		}
		f := wrap(SyncFrame(o.Stream, o.Result, len(o.Result.Entries)))
		frames = append(frames, f)
		budget -= len(f) + overhead
		o.Result.Entries = nil // shared with other readers: drop the reference, never modify
		s.si++
		s.ei = 0
	}
	for budget > 0 && s.hi < len(s.held) {
		h := &s.held[s.hi]
		s.hi++
		s.heldBytes -= len(h.frame)
		if !s.covered(h.stream, h.pos) {
			frames = append(frames, h.frame)
			budget -= len(h.frame) + overhead
		}
		*h = held{}
	}
	if s.si < len(s.out) || s.hi < len(s.held) {
		return frames, false
	}
	s.free()
	s.held, s.heldBytes = nil, 0
	s.phase = live
	return frames, true
}

// FloorTime is how long after its resume a connection's live deliveries are checked against
// its streams' synced positions (Stale). A message the history read already saw may still be
// on its way through the backplane when the resume is done; it arrives within the backplane's
// latency, far below this.
const FloorTime = 30 * time.Second

// Floors reports whether Stale still has streams to check.
func (s *State) Floors() bool { return s.phase == live && len(s.out) > 0 }

// Stale reports whether a delivery at pos of stream that arrives once the connection is live
// is at or before the stream's synced position, so already replayed or part of what the sync
// covered: it must be dropped. The first later position of a stream ends the check for it
// (a channel is ordered: nothing older can follow).
func (s *State) Stale(stream string, pos history.Position) bool {
	if pos.IsZero() || s.phase != live {
		return false
	}
	for i := range s.out {
		if s.out[i].Stream != stream {
			continue
		}
		c := s.out[i].Result.Cursor
		if c.Epoch == pos.Epoch && pos.Seq <= c.Seq {
			return true
		}
		s.out = append(s.out[:i], s.out[i+1:]...)
		return false
	}
	return false
}

// Floor adds the streams a token refresh added to a live connection, with the cursors their
// syncs announced: a message of such a stream published before it was added may still be on
// its way through the backplane, and must be dropped (Stale) like one a resume covered. It
// reports whether there is anything to check.
func (s *State) Floor(heads []Outcome) bool {
	if s.phase != live {
		return false
	}
	for _, h := range heads {
		if !h.Result.Cursor.IsZero() {
			s.out = append(s.out, h)
		}
	}
	return len(s.out) > 0
}

// Floors is a live State that only checks heads (Floor): for a connection whose resume is
// over and whose State the engine has let go.
func Floors(heads []Outcome) State {
	s := State{phase: live}
	s.Floor(heads)
	return s
}

// DropFloors ends every Stale check.
func (s *State) DropFloors() { s.out = nil }

// covered reports whether a delivery at pos of stream is already accounted for by the
// stream's sync: a position of the synced epoch at or before the synced cursor.
func (s *State) covered(stream string, pos history.Position) bool {
	if pos.IsZero() {
		return false
	}
	for i := range s.out {
		if s.out[i].Stream == stream {
			c := s.out[i].Result.Cursor
			return c.Epoch == pos.Epoch && pos.Seq <= c.Seq
		}
	}
	return false
}

// Forget drops what the resume still holds or has still to send of stream: a token refresh
// removed it, and nothing of it may reach the client after the refresh's reply.
func (s *State) Forget(stream string) {
	if s.phase == live {
		return
	}
	if s.phase != replaying {
		s.forgotten = append(s.forgotten, stream)
	}
	kept := s.held[:s.hi]
	for _, h := range s.held[s.hi:] {
		if h.stream == stream {
			s.heldBytes -= len(h.frame)
			continue
		}
		kept = append(kept, h)
	}
	clear(s.held[len(kept):])
	s.held = kept
	for i := s.si; i < len(s.out); i++ {
		if s.out[i].Stream == stream {
			if i == s.si {
				s.ei = 0
			}
			s.out = append(s.out[:i], s.out[i+1:]...)
			break
		}
	}
}
