package enginetest_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// Every close a client provokes or starts: the close frame it gets carries the code (a
// peer's close is answered by echoing its code or with 1000, RFC 6455 §5.5.1), the server
// then ends TCP (at once after a peer's close, within its closing deadline otherwise), and
// Hooks.Closed reports the code the connection ended with.
func TestEveryCloseCarriesItsCode(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		for _, tc := range []struct {
			name    string
			frame   []byte
			replies []uint16 // close codes the client may get
			closed  uint16   // the Hooks.Closed code
		}{
			{"unmasked frame", enginetest.Frame(true, 0, enginetest.OpText, []byte("unmasked"), false), []uint16{1002}, 1002},
			{"rsv bit", enginetest.Frame(true, 4, enginetest.OpText, []byte("x"), true), []uint16{1002}, 1002},
			{"reserved data opcode", enginetest.Msg(0x3, "x"), []uint16{1002}, 1002},
			{"reserved opcode 6", enginetest.Msg(0x6, "x"), []uint16{1002}, 1002},
			{"invalid utf-8", enginetest.Msg(enginetest.OpText, "ok\xff\xfe"), []uint16{1007}, 1007},
			{"close code 1005 on the wire", enginetest.Msg(enginetest.OpClose, "\x03\xed"), []uint16{1002}, 1002},
			{"close code 2999 on the wire", enginetest.Msg(enginetest.OpClose, "\x0b\xb7"), []uint16{1002}, 1002},
			{"peer close 1000", enginetest.Msg(enginetest.OpClose, "\x03\xe8"), []uint16{1000}, 1000},
			{"peer close 1001", enginetest.Msg(enginetest.OpClose, "\x03\xe9tab closed"), []uint16{1001, 1000}, 1001},
			{"peer close 4000", enginetest.Msg(enginetest.OpClose, "\x0f\xa0bye"), []uint16{4000}, 4000},
			{"empty peer close", enginetest.Msg(enginetest.OpClose, ""), []uint16{1005}, 1005},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				user := strings.ReplaceAll(tc.name, " ", "-")
				c := r.DialRaw(t, user)
				c.Send(tc.frame)
				code, before := c.UntilClose(enginetest.Wait)
				if !slices.Contains(tc.replies, code) {
					t.Fatalf("close frame %d, want one of %v", code, tc.replies)
				}
				for _, f := range before {
					if strings.HasPrefix(string(f.Payload), message.EchoPrefix) {
						t.Fatalf("the refused frame was echoed: %q", f.Payload)
					}
				}
				c.ExpectEOF(enginetest.Wait)
				if got := r.Hooks.WaitUser(t, user, enginetest.Wait); got != tc.closed {
					t.Fatalf("Hooks.Closed code %d, want %d", got, tc.closed)
				}
			})
		}
	})
}

// A peer that vanishes without a close frame is reported 1006.
func TestVanishedPeerIsReported1006(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		c := r.DialRaw(t, "gone")
		r.WaitAccepted(t, 1)
		_ = c.Conn.Close()
		if code := r.Hooks.WaitUser(t, "gone", enginetest.Wait); code != message.CloseAbnormal {
			t.Fatalf("Hooks.Closed code %d, want 1006", code)
		}
		testenv.Eventually(t, enginetest.Wait, "no connection counted active", func() bool {
			return r.Metrics.ConnectionsActive.Get() == 0
		})
	})
}

// After its close frame the server ends TCP: at once when the client answers, within its
// closing deadline when it does not (here on the refusal of a bad token).
func TestServerEndsTCPAfterTheClosingHandshake(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		for _, answer := range []bool{true, false} {
			c := enginetest.DialRaw(t, r.Addr, "/ws?token=bad", enginetest.RawOptions{})
			if c.Resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101", c.Resp.StatusCode)
			}
			code, before := c.UntilClose(enginetest.Wait)
			if code != message.ClosePolicyViolation || len(before) != 1 || errorCode(t, string(before[0].Payload)) != message.CodeAuthFailed {
				t.Fatalf("close %d after %d frames, want AUTH_FAILED then 1008", code, len(before))
			}
			start := time.Now()
			if answer {
				c.Send(enginetest.Msg(enginetest.OpClose, "\x03\xf0"))
			}
			c.ExpectEOF(enginetest.Wait)
			if d := time.Since(start); answer && d > time.Second {
				t.Fatalf("TCP ended %v after the client's close frame, want at once", d)
			}
		}
	})
}

// Whatever way a connection ends, and however many end at once, Hooks.Closed is called
// exactly once for it: the recorder fails on a second call, and the rig checks, once Close
// has ended every closing deadline, that the calls match the accepted connections.
func TestClosedExactlyOncePerConnection(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, func(o *session.Options) { o.MaxMessageSize = 100 })
		// The paths run on other goroutines: they write and read without failing the test.
		send := func(c *enginetest.Raw, frames ...[]byte) {
			for _, f := range frames {
				_, _ = c.Conn.Write(f)
			}
		}
		paths := []func(c *enginetest.Raw){
			func(c *enginetest.Raw) { // peer close, answered
				send(c, enginetest.Msg(enginetest.OpClose, "\x03\xe8"))
				_, _ = c.ReadFrame(enginetest.Wait)
			},
			func(c *enginetest.Raw) { _ = c.Conn.Close() },                                                        // vanish
			func(c *enginetest.Raw) { send(c, enginetest.Msg(enginetest.OpText, strings.Repeat("z", 200))) },      // 1009
			func(c *enginetest.Raw) { send(c, enginetest.Frame(true, 0, enginetest.OpText, []byte("u"), false)) }, // 1002
			func(c *enginetest.Raw) { // close, then a frame after it, then vanish
				send(c, enginetest.Msg(enginetest.OpClose, "\x03\xe8"), enginetest.Msg(enginetest.OpText, "late"))
				_ = c.Conn.Close()
			},
		}
		const perPath = 10
		var wg sync.WaitGroup
		var clients []*enginetest.Raw
		for p, path := range paths {
			for i := range perPath {
				c := r.DialRaw(t, fmt.Sprintf("p%d-%d", p, i))
				clients = append(clients, c)
				wg.Add(1)
				go func() { defer wg.Done(); path(c) }()
			}
		}
		wg.Wait()
		// Every TCP connection has ended: the server's closing deadlines have run out for the
		// clients that never answered its close frame.
		for _, c := range clients {
			c.ExpectEOF(enginetest.Wait)
		}
		total := len(paths) * perPath
		r.Hooks.WaitCalls(t, total, enginetest.Wait)
		if n := len(r.Hooks.Calls()); n != total {
			t.Fatalf("%d Closed calls for %d connections", n, total)
		}
		if err := r.Engine.Close(); err != nil {
			t.Fatal(err)
		}
		if n := len(r.Hooks.Calls()); n != total {
			t.Fatalf("%d Closed calls after Close for %d connections", n, total)
		}
		if g := r.Metrics.ConnectionsActive.Get(); g != 0 {
			t.Fatalf("websocket_connections_active = %v", g)
		}
	})
}

// Close ends the connections left with 1001 (a Closed call each), may be called again, and a
// Deliver after it is ignored.
func TestCloseEndsConnectionsWith1001(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		a := servicetest.Dial(t, r.UserURL("a"))
		b := r.DialRaw(t, "b")
		r.WaitAccepted(t, 2)
		if err := r.Engine.Close(); err != nil {
			t.Fatal(err)
		}
		if code, _ := a.WaitClose(t, enginetest.Wait); code != message.CloseGoingAway {
			t.Fatalf("gws client saw %d, want 1001", code)
		}
		if code, _ := b.UntilClose(enginetest.Wait); code != message.CloseGoingAway {
			t.Fatalf("raw client saw %d, want 1001", code)
		}
		b.ExpectEOF(enginetest.Wait)
		r.Hooks.WaitCalls(t, 2, enginetest.Wait)
		calls := r.Hooks.Calls()
		if len(calls) != 2 {
			t.Fatalf("%d Closed calls, want 2", len(calls))
		}
		for _, c := range calls {
			if c.Code != message.CloseGoingAway {
				t.Fatalf("Hooks.Closed %+v, want 1001", c)
			}
		}
		if err := r.Engine.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		r.Deliver(registry.Broadcast, "", "x")
	})
}
