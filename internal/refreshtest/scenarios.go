package refreshtest

import (
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// wait bounds every wait of the scenarios.
const wait = 5 * time.Second

// Engine is what the scenarios need of an engine under test, whose Options.Hooks is Gated.
type Engine interface {
	// Dial connects a client for user with a valid token naming groups.
	Dial(t *testing.T, user string, groups ...string) Client
	// Token mints a valid token for user with groups.
	Token(t *testing.T, user string, groups ...string) string
	// Deliver hands one payload for target to the engine.
	Deliver(target registry.Target, payload string)
	// WaitClosed waits for the Hooks.Closed call of user's connection.
	WaitClosed(t *testing.T, user string)
}

// Client is a connected WebSocket client.
type Client interface {
	Send(t *testing.T, text string)
	Next(t *testing.T) string // the next text message
	Abort()                   // drop the TCP connection without a close frame
}

// Hooks wraps an engine's hooks so that its Join calls wait for the scenarios; call it from
// the engine's Options tuning, then pass the result to Run.
func Hooks(o *session.Options) *Gated {
	g := New(o.Hooks)
	o.Hooks = g
	return g
}

// Run runs every scenario against e, whose hooks are g.
func Run(t *testing.T, e Engine, g *Gated) {
	t.Run("TakesEffectWithItsAuthOK", func(t *testing.T) { takesEffectWithItsAuthOK(t, e, g) })
	t.Run("OvertakenRefreshGivesItsGroupsBack", func(t *testing.T) { overtakenGivesGroupsBack(t, e, g) })
	t.Run("RefreshJoiningAtTheEndGivesItsGroupsBack", func(t *testing.T) { endGivesGroupsBack(t, e, g) })
}

func group(id string) registry.Target { return registry.Target{Kind: registry.Group, ID: id} }

func refresh(t *testing.T, e Engine, c Client, user string, groups ...string) {
	t.Helper()
	c.Send(t, `{"type":"auth","token":"`+e.Token(t, user, groups...)+`"}`)
}

func expect(t *testing.T, c Client, want string) {
	t.Helper()
	if got := c.Next(t); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func expectAuthOK(t *testing.T, c Client) {
	t.Helper()
	if got := c.Next(t); !strings.HasPrefix(got, `{"type":"auth_ok"`) {
		t.Fatalf("got %q, want an auth_ok", got)
	}
}

// takesEffectWithItsAuthOK: until the backplane has the added group the connection keeps its
// old groups and has no auth_ok; after the auth_ok a removed group's message does not arrive
// and an added group's does, and the removed group is given back.
func takesEffectWithItsAuthOK(t *testing.T, e Engine, g *Gated) {
	c := e.Dial(t, "ann", "a")
	refresh(t, e, c, "ann", "b")
	j := g.NextJoin(t, wait)
	if len(j.Groups) != 1 || j.Groups[0] != "b" {
		t.Fatalf("joined %q, want [b]", j.Groups)
	}
	e.Deliver(group("a"), "a-before")
	expect(t, c, "a-before")
	j.Finish()
	expectAuthOK(t, c)
	e.Deliver(group("a"), "a-after")
	e.Deliver(registry.Target{Kind: registry.User, ID: "ann"}, "marker")
	expect(t, c, "marker")
	e.Deliver(group("b"), "b-after")
	expect(t, c, "b-after")
	g.WaitLeft(t, []string{"a"}, wait)
}

// overtakenGivesGroupsBack: a refresh overtaken by a later one before its join finished gives
// its groups back and gets no auth_ok; the later one's groups apply.
func overtakenGivesGroupsBack(t *testing.T, e Engine, g *Gated) {
	c := e.Dial(t, "bob", "a")
	refresh(t, e, c, "bob", "b")
	first := g.NextJoin(t, wait)
	refresh(t, e, c, "bob", "c")
	second := g.NextJoin(t, wait)
	first.Finish()
	g.WaitLeft(t, []string{"b"}, wait)
	second.Finish()
	expectAuthOK(t, c) // the only one
	e.Deliver(group("b"), "b")
	e.Deliver(group("c"), "c")
	expect(t, c, "c")
}

// endGivesGroupsBack: a refresh still joining when the connection ends gives its groups back.
func endGivesGroupsBack(t *testing.T, e Engine, g *Gated) {
	c := e.Dial(t, "cid", "a")
	refresh(t, e, c, "cid", "d")
	j := g.NextJoin(t, wait)
	c.Abort()
	e.WaitClosed(t, "cid")
	j.Finish()
	g.WaitLeft(t, []string{"d"}, wait)
}
