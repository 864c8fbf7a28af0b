//go:build linux

package eventloop

import (
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/refreshtest"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

func TestRefreshChangesGroups(t *testing.T) {
	var g *refreshtest.Gated
	h := newHarness(t, func(o *session.Options) { g = refreshtest.Hooks(o) })
	refreshtest.Run(t, refreshEngine{h}, g)
}

type refreshEngine struct{ h *harness }

func (e refreshEngine) Dial(t *testing.T, user string, groups ...string) refreshtest.Client {
	return refreshClient{dialGWS(t, e.h.wsURL(t, user, groups...))}
}

func (e refreshEngine) Token(t *testing.T, user string, groups ...string) string {
	return e.h.token(t, user, groups, time.Hour)
}

func (e refreshEngine) Deliver(target registry.Target, payload string) {
	e.h.engine.Deliver([]registry.Delivery{{Target: target, Payload: []byte(payload)}})
}

func (e refreshEngine) WaitClosed(t *testing.T, user string) {
	deadline := time.Now().Add(5 * time.Second)
	for len(e.h.hooks.codesFor(user)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no Hooks.Closed for %s within 5s", user)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type refreshClient struct{ c *gwsClient }

func (r refreshClient) Send(t *testing.T, text string) {
	if err := r.c.conn.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func (r refreshClient) Next(t *testing.T) string { return string(r.c.next(t).data) }

func (r refreshClient) Abort() { _ = r.c.conn.NetConn().Close() }
