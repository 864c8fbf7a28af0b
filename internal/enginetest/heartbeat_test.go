package enginetest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
)

func heartbeat(o *session.Options) {
	o.HeartbeatInterval = 100 * time.Millisecond
	o.ConnectionTimeout = 500 * time.Millisecond
}

// The server pings every HeartbeatInterval; a client that sends nothing, pongs included, is
// closed 1001 once ConnectionTimeout has passed, and one that answers pings stays open.
func TestHeartbeatPingsAndSilenceCloses1001(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, heartbeat)
		alive := servicetest.Dial(t, r.UserURL("alive")) // gws answers pings
		start := time.Now()                              // before the handshake: the server counts the silence from it
		silent := r.DialRaw(t, "silent")
		pings := 0
		var code uint16
		for code == 0 {
			f, err := silent.ReadFrame(3 * time.Second)
			switch {
			case err != nil:
				t.Fatalf("read: %v after %d pings", err, pings)
			case f.Op == enginetest.OpPing:
				pings++
			case f.Op == enginetest.OpClose && len(f.Payload) >= 2:
				code = uint16(f.Payload[0])<<8 | uint16(f.Payload[1])
			default:
				t.Fatalf("unexpected frame %#x %q", f.Op, f.Payload)
			}
		}
		// How many pings fit in the silence depends on how often this machine lets the engine
		// run; that they keep coming is what keeps the client below open.
		elapsed := time.Since(start)
		if code != message.CloseGoingAway || pings < 1 || elapsed < 450*time.Millisecond || elapsed > 3*time.Second {
			t.Fatalf("close %d after %d pings and %v, want 1001 after pings at about 500ms", code, pings, elapsed)
		}
		if got := r.Hooks.WaitUser(t, "silent", enginetest.Wait); got != message.CloseGoingAway {
			t.Fatalf("Hooks.Closed code %d, want 1001", got)
		}
		// The answering client connected before the silent one, so its silence would have
		// ended it by now; it must still be served once the engine has pinged it for a while
		// after the silent one's end (each ping is a pass of the timers that would close it).
		closed, got := time.Now(), 0
		for last := closed; last.Sub(closed) < 3*100*time.Millisecond; last = time.Now() {
			alive.Ping(t, enginetest.Wait)
			got++
		}
		if got < 3 {
			t.Fatalf("the answering client got %d pings", got)
		}
		alive.Send(t, "still here")
		if m := alive.NextText(t, enginetest.Wait); m != "Echo: still here" {
			t.Fatalf("got %q", m)
		}
		if codes := r.Hooks.CodesFor("alive"); len(codes) != 0 {
			t.Fatalf("the answering client was closed: %v", codes)
		}
	})
}

// Many silent clients at once are each closed 1001.
func TestManySilentClientsAreAllClosed1001(t *testing.T) {
	const conns = 100
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, heartbeat)
		clients := make([]*enginetest.Raw, conns)
		for i := range clients {
			clients[i] = r.DialRaw(t, fmt.Sprintf("u%d", i))
		}
		for _, c := range r.Hooks.WaitCalls(t, conns, 2*enginetest.Wait) {
			if c.Code != message.CloseGoingAway {
				t.Fatalf("Hooks.Closed %+v, want 1001", c)
			}
		}
		for i, c := range clients {
			if code, _ := c.UntilClose(enginetest.Wait); code != message.CloseGoingAway {
				t.Fatalf("client %d: close %d, want 1001", i, code)
			}
		}
		testenv.Eventually(t, enginetest.Wait, "no connection counted active", func() bool {
			return r.Metrics.ConnectionsActive.Get() == 0
		})
	})
}
