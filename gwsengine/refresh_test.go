package gwsengine

import (
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/refreshtest"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

func TestRefreshChangesGroups(t *testing.T) {
	var g *refreshtest.Gated
	r := newRig(t, func(o *session.Options) { g = refreshtest.Hooks(o) })
	refreshtest.Run(t, refreshEngine{r}, g)
}

type refreshEngine struct{ r *rig }

func (e refreshEngine) Dial(t *testing.T, user string, groups ...string) refreshtest.Client {
	return refreshClient{dialGWS(t, e.r.wsURL(e.r.token(user, groups, time.Hour)), nil)}
}

func (e refreshEngine) Token(_ *testing.T, user string, groups ...string) string {
	return e.r.token(user, groups, time.Hour)
}

func (e refreshEngine) Deliver(target registry.Target, payload string) {
	e.r.eng.Deliver([]registry.Delivery{{Target: target, Payload: []byte(payload)}})
}

func (e refreshEngine) WaitClosed(t *testing.T, user string) {
	for e.r.hooks.wait(t, 5*time.Second).user != user { // earlier connections' ends
	}
}

type refreshClient struct{ c *gwsClient }

func (r refreshClient) Send(t *testing.T, text string) {
	if err := r.c.socket.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func (r refreshClient) Next(t *testing.T) string { return string(r.c.next(t).data) }

func (r refreshClient) Abort() { _ = r.c.socket.NetConn().Close() }
