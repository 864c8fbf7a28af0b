package gwsengine

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/internal/wsclient"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

// The server consumes the engine through this interface; package server does not import
// this one, so the check costs no cycle. What every engine promises through it is tested
// once for both engines, in internal/enginetest; this package tests what is its own.
var _ server.Engine = (*Engine)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func withMaxMessage(n int) rigOption { return func(o *session.Options) { o.MaxMessageSize = n } }

// A text frame must be UTF-8; a payload that is not is refused once, for every target, and
// the connection carries on. (The service drops such payloads before any engine, in package
// sequence; this guard is the gws engine's own.)
func TestDeliverSkipsPayloadThatIsNotUTF8(t *testing.T) {
	r := newRig(t)
	c := wsclient.Dial(t, r.wsURL(r.token("alice", nil, time.Hour)))
	r.waitConns(1)
	r.deliver(registry.User, "alice", "\xff\xfe")
	r.deliver(registry.User, "alice", `"ok"`)
	if got := c.NextText(t, 5*time.Second); got != `"ok"` {
		t.Fatalf("got %q, want the valid message only", got)
	}
}
