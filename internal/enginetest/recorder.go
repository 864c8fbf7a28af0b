package enginetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/session"
)

// Call is one Hooks.Closed call.
type Call struct {
	ID   *session.Identity
	User string
	Code uint16
	At   time.Time
}

// Recorder is a session.Hooks that writes every Closed call down and fails the test on a
// second call for the same connection (engines pass a pointer to each connection's own
// Identity). Join and Leave stand for a backplane that has every channel at once.
type Recorder struct {
	t       testing.TB
	mu      sync.Mutex
	calls   []Call
	seen    map[*session.Identity]bool
	changed chan struct{} // closed and replaced on every call
}

// NewRecorder returns an empty Recorder failing t on a repeated Closed.
func NewRecorder(t testing.TB) *Recorder {
	return &Recorder{t: t, seen: map[*session.Identity]bool{}, changed: make(chan struct{})}
}

// Closed implements session.Hooks.
func (h *Recorder) Closed(id *session.Identity, code uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[id] {
		h.t.Errorf("Hooks.Closed called twice for a connection of %q (code %d)", id.User, code)
	}
	h.seen[id] = true
	h.calls = append(h.calls, Call{ID: id, User: id.User, Code: code, At: time.Now()})
	close(h.changed)
	h.changed = make(chan struct{})
}

// Join implements session.Hooks: the channels are live at once.
func (h *Recorder) Join(_ []string, done func()) { go done() }

// Leave implements session.Hooks.
func (h *Recorder) Leave([]string) {}

// Calls is every Closed call so far, in order.
func (h *Recorder) Calls() []Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// WaitCalls waits until at least n Closed calls happened and returns them.
func (h *Recorder) WaitCalls(t testing.TB, n int, within time.Duration) []Call {
	t.Helper()
	deadline := time.After(within)
	for {
		h.mu.Lock()
		calls, changed := slices.Clone(h.calls), h.changed
		h.mu.Unlock()
		if len(calls) >= n {
			return calls
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d Hooks.Closed calls within %v, want %d: %+v", len(calls), within, n, calls)
		}
	}
}

// CodesFor is the close codes reported for user's connections.
func (h *Recorder) CodesFor(user string) []uint16 {
	var out []uint16
	for _, c := range h.Calls() {
		if c.User == user {
			out = append(out, c.Code)
		}
	}
	return out
}

// WaitUser waits for the first Closed call of user's connections and returns its code.
func (h *Recorder) WaitUser(t testing.TB, user string, within time.Duration) uint16 {
	t.Helper()
	deadline := time.After(within)
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		if codes := h.CodesFor(user); len(codes) > 0 {
			return codes[0]
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no Hooks.Closed for %q within %v", user, within)
		}
	}
}
