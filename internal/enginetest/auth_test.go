package enginetest_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/refreshtest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// errorCode is the code of an ErrorMessage, failing the test for anything else.
func errorCode(t testing.TB, p string) string {
	t.Helper()
	var e struct{ Type, Code string }
	if err := json.Unmarshal([]byte(p), &e); err != nil || e.Type != message.TypeError {
		t.Fatalf("not an ErrorMessage: %q", p)
	}
	return e.Code
}

// expOf reads the exp claim of a token without verifying it.
func expOf(t testing.TB, tok string) int64 {
	t.Helper()
	var c jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatal(err)
	}
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		t.Fatalf("token has no exp: %v", err)
	}
	return exp.Unix()
}

// expectRefusal reads the ErrorMessage with code, then the close with closeCode.
func expectRefusal(t testing.TB, c *servicetest.Client, code string, closeCode uint16) {
	t.Helper()
	if got := errorCode(t, c.NextText(t, enginetest.Wait)); got != code {
		t.Fatalf("error code %s, want %s", got, code)
	}
	if got, _ := c.WaitClose(t, enginetest.Wait); got != closeCode {
		t.Fatalf("close %d, want %d", got, closeCode)
	}
}

// Reject completes the upgrade (selecting the offered subprotocol), sends the ErrorMessage and
// closes 1008; nothing is registered, so nothing is reported closed or counted active (the
// rig checks the Closed calls against the accepted upgrades).
func TestRejectSendsErrorMessageThen1008(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		for name, tc := range map[string]struct{ token, code string }{
			"bad token":     {"not-a-jwt", message.CodeAuthFailed},
			"expired token": {r.Token("late", -time.Minute), message.CodeTokenExpired},
		} {
			t.Run(name, func(t *testing.T) {
				c := servicetest.Dial(t, r.DialURL(tc.token), servicetest.DialOptions{Subprotocols: []string{session.Subprotocol}})
				if got := c.Response.Header.Get("Sec-WebSocket-Protocol"); got != session.Subprotocol {
					t.Errorf("subprotocol %q, want %q", got, session.Subprotocol)
				}
				expectRefusal(t, c, tc.code, message.ClosePolicyViolation)
			})
		}
		if n := r.Metrics.ConnectionsActive.Get(); n != 0 {
			t.Errorf("active connections %v after rejections", n)
		}
	})
}

// The bearer.<JWT> subprotocol carries the token; notifications.v1 is selected only when
// offered, and the token never appears in the response.
func TestSubprotocolSelectedOnlyWhenOfferedAndTokenNeverEchoed(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		tok := r.Token("proto", time.Hour)
		ctx, cancel := context.WithTimeout(t.Context(), enginetest.Wait)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, r.URL, &websocket.DialOptions{Subprotocols: []string{session.Subprotocol, session.BearerPrefix + tok}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != session.Subprotocol || c.Subprotocol() != session.Subprotocol {
			t.Fatalf("selected %q, want exactly %q", got, session.Subprotocol)
		}
		for name, v := range resp.Header {
			if s := strings.Join(v, ","); strings.Contains(s, tok) || strings.Contains(s, session.BearerPrefix) {
				t.Fatalf("response header %s echoes the token: %q", name, s)
			}
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, p, err := c.Read(ctx); err != nil || string(p) != "Echo: x" {
			t.Fatalf("echo %q, %v", p, err)
		}
		plain := r.DialRaw(t, "plain")
		if v := plain.Resp.Header.Values("Sec-WebSocket-Protocol"); len(v) != 0 {
			t.Fatalf("Sec-WebSocket-Protocol %q for a client that offered none", v)
		}
	})
}

// A connection ends with TOKEN_EXPIRED and 1008 at its token's expiry; an in-band refresh for
// the same subject is acknowledged with the new exp and moves the expiry, later or earlier.
func TestTokenExpiryCloses1008AndARefreshMovesIt(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, func(o *session.Options) { o.Shards = 1 })
		// exp has one-second resolution: a 3 s token lives between two and three seconds,
		// time enough for the refreshes below however slowly this machine runs.
		short := r.Token("ann", 3*time.Second)
		expiring := servicetest.Dial(t, r.DialURL(short))
		renewed := servicetest.Dial(t, r.DialURL(short))
		shortened := servicetest.Dial(t, r.UserURL("bea"))

		fresh := r.Token("ann", time.Hour)
		renewed.Send(t, `{"type":"auth","token":"`+fresh+`"}`)
		var ok struct {
			Type string
			Exp  int64
		}
		if m := renewed.NextText(t, enginetest.Wait); json.Unmarshal([]byte(m), &ok) != nil ||
			ok.Type != message.TypeAuthOK || ok.Exp != expOf(t, fresh) {
			t.Fatalf("refresh answer %q, want an auth_ok with exp %d", m, expOf(t, fresh))
		}
		shortened.Send(t, `{"type":"auth","token":"`+r.Token("bea", 3*time.Second)+`"}`)
		if m := shortened.NextText(t, enginetest.Wait); !strings.Contains(m, `"auth_ok"`) {
			t.Fatalf("refresh answer %q, want auth_ok", m)
		}

		expectRefusal(t, expiring, message.CodeTokenExpired, message.ClosePolicyViolation)
		expectRefusal(t, shortened, message.CodeTokenExpired, message.ClosePolicyViolation)
		// The old expiry has passed for the engine. A token minted now expires at least a
		// second later: once the engine has closed its connection, the renewed connection's
		// old expiry is well behind it too.
		probe := servicetest.Dial(t, r.DialURL(r.Token("probe", time.Second)))
		expectRefusal(t, probe, message.CodeTokenExpired, message.ClosePolicyViolation)
		renewed.Send(t, "still here")
		if m := renewed.NextText(t, enginetest.Wait); m != "Echo: still here" {
			t.Fatalf("the refreshed connection answered %q", m)
		}
		if codes := r.Hooks.CodesFor("ann"); len(codes) != 1 || codes[0] != message.ClosePolicyViolation {
			t.Fatalf("Closed codes for ann %v, want one 1008 (the refreshed connection still open)", codes)
		}
	})
}

// A refresh that does not verify, or names another subject, gets AUTH_FAILED and 1008.
func TestBadRefreshCloses1008(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		other, err := auth.NewMinter("HS256", []byte("another-secret-another-secret-0123456"), "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		forged, err := other.Mint("dave", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for name, token := range map[string]string{
			"garbage":       "garbage",
			"other subject": r.Token("mallory", time.Hour),
			"wrong secret":  forged,
		} {
			t.Run(name, func(t *testing.T) {
				user := "dave-" + strings.ReplaceAll(name, " ", "-")
				c := servicetest.Dial(t, r.UserURL(user))
				c.Send(t, `{"type":"auth","token":"`+token+`"}`)
				expectRefusal(t, c, message.CodeAuthFailed, message.ClosePolicyViolation)
				if code := r.Hooks.WaitUser(t, user, enginetest.Wait); code != message.ClosePolicyViolation {
					t.Fatalf("Hooks.Closed code %d, want 1008", code)
				}
			})
		}
	})
}

// A refresh's change of groups (internal/refreshtest).
func TestRefreshChangesGroups(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		var g *refreshtest.Gated
		r := enginetest.New(t, k, func(o *session.Options) { g = refreshtest.Hooks(o) })
		refreshtest.Run(t, refreshEngine{r}, g)
	})
}

type refreshEngine struct{ r *enginetest.Rig }

func (e refreshEngine) Dial(t *testing.T, user string, groups ...string) refreshtest.Client {
	return refreshClient{servicetest.Dial(t, e.r.UserURL(user, groups...))}
}

func (e refreshEngine) Token(_ *testing.T, user string, groups ...string) string {
	return e.r.Token(user, time.Hour, groups...)
}

func (e refreshEngine) Deliver(target registry.Target, payload string) {
	e.r.Engine.Deliver([]registry.Delivery{{Target: target, Payload: []byte(payload)}})
}

func (e refreshEngine) WaitClosed(t *testing.T, user string) {
	e.r.Hooks.WaitUser(t, user, enginetest.Wait)
}

type refreshClient struct{ c *servicetest.Client }

func (r refreshClient) Send(t *testing.T, text string) { r.c.Send(t, text) }

func (r refreshClient) Next(t *testing.T) string { return r.c.NextText(t, enginetest.Wait) }

func (r refreshClient) Abort() { _ = r.c.Conn.NetConn().Close() }
