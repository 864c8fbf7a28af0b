package session

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/message"
)

var secret = []byte("session-test-secret-session-test")

func policy(t *testing.T) (*Policy, *auth.Minter) {
	t.Helper()
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	m, err := auth.NewMinter("HS256", secret, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	return NewPolicy(v), m
}

func mint(t *testing.T, m *auth.Minter, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := m.Mint(sub, nil, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func errorCode(t *testing.T, reply []byte) string {
	t.Helper()
	var e message.Error
	if err := json.Unmarshal(reply, &e); err != nil || e.Type != "error" {
		t.Fatalf("reply %q is not an ErrorMessage", reply)
	}
	return e.Code
}

func TestOnTextEchoesOrdinaryText(t *testing.T) {
	p, _ := policy(t)
	a := p.OnText(&Identity{User: "u1"}, &Inbound{}, 0, []byte("X"))
	if string(a.Reply) != "Echo: X" || a.Close != 0 || !a.Expires.IsZero() {
		t.Fatalf("%+v", a)
	}
}

func TestOnTextRefreshForTheSameSubExtendsTheConnection(t *testing.T) {
	p, m := policy(t)
	tok := mint(t, m, "u1", time.Hour)
	a := p.OnText(&Identity{User: "u1"}, &Inbound{}, 0, []byte(`{"type":"auth","token":"`+tok+`"}`))
	if a.Close != 0 || a.Expires.IsZero() {
		t.Fatalf("%+v", a)
	}
	want := string(message.AuthOKJSON(a.Expires.Unix()))
	if string(a.Reply) != want {
		t.Fatalf("reply %s, want %s", a.Reply, want)
	}
	if d := time.Until(a.Expires); d < 59*time.Minute {
		t.Fatalf("new expiry %v away", d)
	}
}

func TestOnTextRefreshForAnotherSubCloses1008(t *testing.T) {
	p, m := policy(t)
	a := p.OnText(&Identity{User: "u1"}, &Inbound{}, 0, []byte(`{"type":"auth","token":"`+mint(t, m, "u2", time.Hour)+`"}`))
	if a.Close != message.ClosePolicyViolation || errorCode(t, a.Reply) != message.CodeAuthFailed || !a.Expires.IsZero() {
		t.Fatalf("%+v", a)
	}
}

func TestOnTextRefreshWithABadTokenCloses1008(t *testing.T) {
	p, _ := policy(t)
	for _, text := range []string{`{"type":"auth","token":"garbage"}`, `{"type":"auth"}`} {
		a := p.OnText(&Identity{User: "u1"}, &Inbound{}, 0, []byte(text))
		if a.Close != message.ClosePolicyViolation || errorCode(t, a.Reply) != message.CodeAuthFailed {
			t.Fatalf("%s: %+v", text, a)
		}
	}
}

func TestOnTextRefreshWithAnExpiredTokenClosesWithAuthFailed(t *testing.T) {
	p, m := policy(t)
	a := p.OnText(&Identity{User: "u1"}, &Inbound{}, 0, []byte(`{"type":"auth","token":"`+mint(t, m, "u1", -time.Minute)+`"}`))
	if a.Close != message.ClosePolicyViolation || errorCode(t, a.Reply) != message.CodeAuthFailed {
		t.Fatalf("%+v", a)
	}
}

func TestCannedActions(t *testing.T) {
	for _, tc := range []struct {
		a     Action
		code  string
		close uint16
	}{
		{Expired(), message.CodeTokenExpired, 1008},
		{SlowConsumer(), message.CodeSlowConsumer, 1013},
		{TooLarge(), message.CodeMessageTooLarge, 1009},
	} {
		if tc.a.Close != tc.close || errorCode(t, tc.a.Reply) != tc.code {
			t.Errorf("%+v, want %s + %d", tc.a, tc.code, tc.close)
		}
	}
}
