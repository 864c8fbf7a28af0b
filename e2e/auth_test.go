package e2e_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// docs/PROTOCOL.md "Connecting" and "Authentication": refusals.

func TestTokenInQueryIsAccepted(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		c.Send(t, "hi")
		expectText(t, c, "Echo: hi")
		// The handler counts the upgrade once Accept returns, which on the epoll engine can be
		// after the shard has already served the client its 101 and the echo.
		n.WaitMetric(t, `websocket_connections_total{result="accepted"}`, 1, 2*time.Second)
	})
}

func TestTokenAsBearerSubprotocolSelectsNotificationsV1AndNeverEchoesTheToken(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		tok := n.Token(t, "u1")
		c := servicetest.Dial(t, n.WSURL, servicetest.DialOptions{Subprotocols: []string{"notifications.v1", "bearer." + tok}})
		if got := c.Response.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "notifications.v1" {
			t.Fatalf("Sec-WebSocket-Protocol %q, want exactly notifications.v1", got)
		}
		for name, values := range c.Response.Header {
			for _, v := range values {
				if strings.Contains(v, tok) || strings.Contains(v, "bearer.") {
					t.Fatalf("response header %s echoes the token: %q", name, v)
				}
			}
		}
		waitActive(t, n.Service, 1)
		n.publish(t, user("u1"), `{"via":"subprotocol"}`)
		expectText(t, c, `{"via":"subprotocol"}`)
	})
}

func TestBearerSubprotocolIsAcceptedByAnIndependentClient(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		conn, resp := coderDial(t, n.WSURL, []string{"notifications.v1", "bearer." + n.Token(t, "u1")})
		if conn.Subprotocol() != "notifications.v1" {
			t.Fatalf("selected subprotocol %q", conn.Subprotocol())
		}
		if h := resp.Header.Get("Sec-WebSocket-Protocol"); h != "notifications.v1" {
			t.Fatalf("Sec-WebSocket-Protocol %q", h)
		}
		coderEcho(t, conn, "via coder")
	})
}

// badToken is a token the service must refuse, and the ErrorMessage code it refuses it with.
type badToken struct {
	name  string
	code  string
	token func(t *testing.T, n *node) string
}

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, exp time.Duration) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix()}
}

var badTokens = []badToken{
	{"missing", "AUTH_FAILED", func(*testing.T, *node) string { return "" }},
	{"garbage", "AUTH_FAILED", func(*testing.T, *node) string { return "not.a.jwt" }},
	{"badly signed", "AUTH_FAILED", func(t *testing.T, _ *node) string {
		return signed(t, jwt.SigningMethodHS256, []byte("some-other-secret-some-other-secret"), claims("u1", time.Hour))
	}},
	{"expired", "TOKEN_EXPIRED", func(t *testing.T, n *node) string {
		// Well past the verifier's clock-skew leeway.
		return signed(t, jwt.SigningMethodHS256, []byte(n.Secret), claims("u1", -time.Minute))
	}},
	{"alg none", "AUTH_FAILED", func(t *testing.T, _ *node) string {
		return signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("u1", time.Hour))
	}},
	{"wrong algorithm HS512", "AUTH_FAILED", func(t *testing.T, n *node) string {
		return signed(t, jwt.SigningMethodHS512, []byte(n.Secret), claims("u1", time.Hour))
	}},
	{"wrong algorithm RS256", "AUTH_FAILED", func(t *testing.T, _ *node) string {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		return signed(t, jwt.SigningMethodRS256, k, claims("u1", time.Hour))
	}},
	{"no sub", "AUTH_FAILED", func(t *testing.T, n *node) string {
		return signed(t, jwt.SigningMethodHS256, []byte(n.Secret), jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})
	}},
	{"empty sub", "AUTH_FAILED", func(t *testing.T, n *node) string {
		return signed(t, jwt.SigningMethodHS256, []byte(n.Secret), claims("", time.Hour))
	}},
	{"no exp", "AUTH_FAILED", func(t *testing.T, n *node) string {
		return signed(t, jwt.SigningMethodHS256, []byte(n.Secret), jwt.MapClaims{"sub": "u1"})
	}},
	{"groups not a list", "AUTH_FAILED", func(t *testing.T, n *node) string {
		c := claims("u1", time.Hour)
		c["groups"] = "class7"
		return signed(t, jwt.SigningMethodHS256, []byte(n.Secret), c)
	}},
}

func TestRefusedTokenGetsErrorMessageThenClose1008AndSubscribesNothing(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		for _, bt := range badTokens {
			t.Run(strings.ReplaceAll(bt.name, " ", "_"), func(t *testing.T) {
				tok := bt.token(t, n)
				c := servicetest.Dial(t, n.DialURL(tok))
				expectRefusal(t, c, bt.code, 1008)
				if got := n.Metric(t, "backplane_subscriptions_active"); got != 0 {
					t.Fatalf("backplane_subscriptions_active = %v after a refused upgrade", got)
				}
				if got := n.Metric(t, "websocket_connections_active"); got != 0 {
					t.Fatalf("websocket_connections_active = %v after a refused upgrade", got)
				}
				if n.rdb != nil {
					if chans := n.subscriptions(t); len(chans) != 0 {
						t.Fatalf("PUBSUB CHANNELS = %q after a refused upgrade", chans)
					}
				}
			})
		}
		if got, want := n.Metric(t, `websocket_connections_total{result="auth_failed"}`), float64(len(badTokens)); got != want {
			t.Fatalf(`websocket_connections_total{result="auth_failed"} = %v, want %v`, got, want)
		}
		if got := n.Metric(t, `websocket_connections_total{result="accepted"}`); got != 0 {
			t.Fatalf(`websocket_connections_total{result="accepted"} = %v`, got)
		}
	})
}

func TestMissingTokenClosesWith1008(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		expectRefusal(t, servicetest.Dial(t, n.WSURL), "AUTH_FAILED", 1008)
	})
}

func TestExpiredTokenClosesWith1008(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		tok := signed(t, jwt.SigningMethodHS256, []byte(n.Secret), claims("u1", -time.Minute))
		expectRefusal(t, servicetest.Dial(t, n.DialURL(tok)), "TOKEN_EXPIRED", 1008)
	})
}

func TestRefusedBearerSubprotocolStillSelectsNotificationsV1AndCloses1008(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		conn, resp := coderDial(t, n.WSURL, []string{"notifications.v1", "bearer.not-a-token"})
		if h := resp.Header.Get("Sec-WebSocket-Protocol"); h != "notifications.v1" {
			t.Fatalf("Sec-WebSocket-Protocol %q", h)
		}
		text := coderRead(t, conn)
		checkErrorMessage(t, text, "AUTH_FAILED")
		if code := coderCloseCode(t, conn); code != 1008 {
			t.Fatalf("close code %d, want 1008", code)
		}
	})
}

func TestRefusedTokenNeverAppearsInTheReply(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		tok := signed(t, jwt.SigningMethodHS256, []byte("wrong-secret-wrong-secret-wrong-secret"), claims("u1", time.Hour))
		c := rawDial(t, n.Addr, "/ws?token="+tok, rawOptions{})
		frames, _ := c.readUntilClose(wait)
		if lastClose(frames) != 1008 {
			t.Fatalf("frames %v, want a close 1008 last", frames)
		}
		for _, f := range frames {
			for _, part := range strings.Split(tok, ".") {
				if strings.Contains(string(f.Payload), part) {
					t.Fatalf("frame %q contains part of the token", f.Payload)
				}
			}
		}
		for name, v := range c.Resp.Header {
			if strings.Contains(strings.Join(v, ","), tok) {
				t.Fatalf("header %s contains the token", name)
			}
		}
	})
}

// docs/PROTOCOL.md "Token refresh, keep-alive and limits": token lifetime.

// expOf reads the exp claim of a token without verifying it.
func expOf(t *testing.T, tok string) int64 {
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

// docs/PROTOCOL.md "Authentication": Origin.

func TestAllowedOriginIsAccepted(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := servicetest.Dial(t, n.DialURL(n.Token(t, "u1")), servicetest.DialOptions{Header: http.Header{"Origin": {servicetest.Origin}}})
		c.Send(t, "x")
		expectText(t, c, "Echo: x")
	})
}

func TestForeignOriginGetsHTTP403WithoutUpgrade(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		status, _ := rawStatus(t, n.Addr, "/ws?token="+n.Token(t, "u1"), http.Header{"Origin": {"https://evil.example"}})
		if status != http.StatusForbidden {
			t.Fatalf("status %d, want 403", status)
		}
		if got := n.Metric(t, `websocket_connections_total{result="origin_rejected"}`); got != 1 {
			t.Fatalf(`websocket_connections_total{result="origin_rejected"} = %v`, got)
		}
		if got := n.Metric(t, "backplane_subscriptions_active"); got != 0 {
			t.Fatalf("backplane_subscriptions_active = %v", got)
		}
	})
}

func TestAbsentOriginIsAllowed(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		if c.Resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", c.Resp.StatusCode)
		}
	})
}

func TestStarOriginAllowsEveryOrigin(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"ALLOWED_ORIGINS": "*"})
		for _, origin := range []string{"https://evil.example", "http://localhost:9999", "null"} {
			status, body := rawStatus(t, n.Addr, "/ws?token="+n.Token(t, "u1"), http.Header{"Origin": {origin}})
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("origin %s: status %d %s, want 101", origin, status, body)
			}
		}
	})
}

func TestRS256ServiceAcceptsRS256AndRefusesHS256SignedWithItsPublicKey(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": string(pubPEM)})
		good := signed(t, jwt.SigningMethodRS256, k, claims("u1", time.Hour))
		c := servicetest.Dial(t, n.DialURL(good))
		c.Send(t, "rs256")
		expectText(t, c, "Echo: rs256")
		// Algorithm confusion: HS256 keyed with the public key the server holds.
		confused := signed(t, jwt.SigningMethodHS256, pubPEM, claims("u1", time.Hour))
		expectRefusal(t, servicetest.Dial(t, n.DialURL(confused)), "AUTH_FAILED", 1008)
		hs := signed(t, jwt.SigningMethodHS256, []byte(n.Secret), claims("u1", time.Hour))
		expectRefusal(t, servicetest.Dial(t, n.DialURL(hs)), "AUTH_FAILED", 1008)
	})
}

func TestEveryConnectionIsClosedAtItsOwnTokenExpiry(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		type live struct {
			c   *servicetest.Client
			exp time.Time
		}
		var conns []live
		for i := 0; i < 9; i++ {
			tok := n.TokenTTL(t, time.Duration(1+i%3)*time.Second+500*time.Millisecond, fmt.Sprintf("u%d", i))
			conns = append(conns, live{servicetest.Dial(t, n.DialURL(tok)), time.Unix(expOf(t, tok), 0)})
		}
		for i, l := range conns {
			expectRefusal(t, l.c, "TOKEN_EXPIRED", 1008)
			at := l.c.ClosedAt()
			if at.Before(l.exp.Add(-200*time.Millisecond)) || at.After(l.exp.Add(1500*time.Millisecond)) {
				t.Errorf("connection %d closed at %v, its token expires at %v", i, at.Format(time.StampMilli), l.exp.Format(time.StampMilli))
			}
		}
	})
}
