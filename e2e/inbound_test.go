package e2e_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// What a client may send: the token refresh rate, and what a refresh does to the connection's
// groups. The inbound frame rate and refresh bursts are engine behaviour, tested for both
// engines in internal/enginetest.

// refreshFrame is a token refresh as a client sends it.
func refreshFrame(token string) string { return `{"type":"auth","token":"` + token + `"}` }

func TestRefreshingOnceASecondIsAllowed(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		for i := range 3 {
			if i > 0 {
				time.Sleep(1200 * time.Millisecond) // the pace under test, not a wait for an event
			}
			c.Send(t, refreshFrame(n.Token(t, "u1")))
			expectAuthOK(t, c)
		}
		stillOpen(t, c)
	})
}

// expectAuthOK checks that the next message is an auth_ok.
func expectAuthOK(t *testing.T, c *servicetest.Client) {
	t.Helper()
	text := c.NextText(t, wait)
	var ok struct {
		Type string `json:"type"`
		Exp  int64  `json:"exp"`
	}
	if err := json.Unmarshal([]byte(text), &ok); err != nil || ok.Type != "auth_ok" || ok.Exp == 0 {
		t.Fatalf("got %q, want an auth_ok", text)
	}
}

func TestRefreshWithOtherGroupsChangesWhatTheConnectionReceives(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, backplane string) {
		n := startNode(t, engine, backplane, nil)
		c := dial(t, n.Service, "u1", "classA", "classX")
		waitActive(t, n.Service, 1)
		n.WaitMetric(t, "backplane_subscriptions_active", 4, wait) // ws:u1, two groups, broadcast

		c.Send(t, refreshFrame(n.Token(t, "u1", "classB")))
		expectAuthOK(t, c)

		// Removed: a message to classA published after the auth_ok never arrives; the marker
		// to the user's own channel, published after it, does.
		n.publish(t, group("classA"), `{"n":"A"}`)
		n.publish(t, user("u1"), `{"n":"marker"}`)
		expectText(t, c, `{"n":"marker"}`)
		// Added: a message to classB published after the auth_ok arrives.
		n.publish(t, group("classB"), `{"n":"B"}`)
		expectText(t, c, `{"n":"B"}`)

		// The channels of removed groups are released (after the linger).
		n.WaitMetric(t, "backplane_subscriptions_active", 3, 2*wait)
		if n.rdb != nil {
			eventually(t, 2*wait, "PUBSUB CHANNELS without the removed groups", func() bool {
				chans := n.subscriptions(t)
				return slices.Contains(chans, "ws-group:classB") &&
					!slices.Contains(chans, "ws-group:classA") && !slices.Contains(chans, "ws-group:classX")
			})
		}
		// And whatever the connection holds goes back when it closes.
		_ = c.Conn.WriteClose(1000, nil)
		n.WaitMetric(t, "backplane_subscriptions_active", 0, 2*wait)
	})
}
