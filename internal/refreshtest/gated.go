// Package refreshtest is the contract a token refresh's change of groups keeps on every
// engine, written once as scenarios (Run) that the engine contract suite (internal/enginetest)
// drives for both engines through a small adapter. Gated hooks hold each Hooks.Join until the
// scenario lets it finish and record every Hooks.Leave, so a scenario can order a refresh
// against deliveries, a later refresh or the connection's end.
package refreshtest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/session"
)

// Gated is a session.Hooks whose Closed goes to the embedded Hooks and whose Join waits for
// the test.
type Gated struct {
	session.Hooks
	joins chan Join

	mu   sync.Mutex
	left [][]string
}

// Join is one Hooks.Join call waiting for the test.
type Join struct {
	Groups []string
	done   func()
}

// Finish lets the join complete, as the backplane confirming its channels.
func (j Join) Finish() { go j.done() }

// New returns a Gated passing Closed to closed.
func New(closed session.Hooks) *Gated {
	return &Gated{Hooks: closed, joins: make(chan Join, 64)}
}

// Join implements session.Hooks: it waits for NextJoin's caller.
func (g *Gated) Join(groups []string, done func()) {
	g.joins <- Join{Groups: slices.Clone(groups), done: done}
}

// Leave implements session.Hooks.
func (g *Gated) Leave(groups []string) {
	if len(groups) == 0 {
		return
	}
	g.mu.Lock()
	g.left = append(g.left, slices.Clone(groups))
	g.mu.Unlock()
}

// NextJoin returns the next Join call, failing the test after timeout.
func (g *Gated) NextJoin(t testing.TB, timeout time.Duration) Join {
	t.Helper()
	select {
	case j := <-g.joins:
		return j
	case <-time.After(timeout):
		t.Fatalf("no Hooks.Join within %v", timeout)
	}
	return Join{}
}

// WaitLeft waits until some Leave call gave back exactly groups.
func (g *Gated) WaitLeft(t testing.TB, groups []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g.mu.Lock()
		found := slices.ContainsFunc(g.left, func(l []string) bool { return slices.Equal(l, groups) })
		seen := slices.Clone(g.left)
		g.mu.Unlock()
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Hooks.Leave(%q) within %v; left: %q", groups, timeout, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
