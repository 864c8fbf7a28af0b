package message

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Contract tests for the wire formats of docs/PROTOCOL.md ("Error codes", "Close codes", the
// notification shape of "Publishing"): the exact bytes a frontend sees.

func TestNotificationMessageSerialisesToTheSpecShape(t *testing.T) {
	n := Notification{Type: TypeNotification, EventType: "batch_completed", Data: json.RawMessage(`{"batch_id":"123","status":"completed"}`)}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123","status":"completed"}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestNotificationMessageRoundTrips(t *testing.T) {
	const in = `{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123","status":"completed"}}`
	var n Notification
	if err := json.Unmarshal([]byte(in), &n); err != nil {
		t.Fatal(err)
	}
	if n.Type != "notification" || n.EventType != "batch_completed" {
		t.Fatalf("decoded %+v", n)
	}
	var data map[string]string
	if err := json.Unmarshal(n.Data, &data); err != nil || data["batch_id"] != "123" || data["status"] != "completed" {
		t.Fatalf("data %s (%v)", n.Data, err)
	}
}

func TestErrorMessageIsExactlyTheSpecShape(t *testing.T) {
	const want = `{"type":"error","code":"AUTH_FAILED","message":"Authentication failed"}`
	if got := string(ErrorJSON(CodeAuthFailed)); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestEveryErrorCodeHasAMessage(t *testing.T) {
	for _, code := range []string{CodeAuthFailed, CodeTokenExpired, CodeConnectionLimit, CodeMessageTooLarge, CodeRateLimited, CodeSlowConsumer} {
		var m map[string]any
		if err := json.Unmarshal(ErrorJSON(code), &m); err != nil {
			t.Fatalf("%s: %v", code, err)
		}
		if len(m) != 3 || m["type"] != "error" || m["code"] != code {
			t.Errorf("%s: %v", code, m)
		}
		if text, _ := m["message"].(string); text == "" || text == code {
			t.Errorf("%s: message %q is not a human sentence", code, text)
		}
	}
}

func TestErrorCodesAreTheSpecCodes(t *testing.T) {
	got := []string{CodeAuthFailed, CodeTokenExpired, CodeConnectionLimit, CodeMessageTooLarge, CodeRateLimited, CodeSlowConsumer}
	want := []string{"AUTH_FAILED", "TOKEN_EXPIRED", "CONNECTION_LIMIT", "MESSAGE_TOO_LARGE", "RATE_LIMITED", "SLOW_CONSUMER"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("codes %q, want %q", got, want)
	}
}

func TestUnknownErrorCodeUsesTheCodeAsMessage(t *testing.T) {
	if e := NewError("SOMETHING"); e.Type != "error" || e.Code != "SOMETHING" || e.Message != "SOMETHING" {
		t.Fatalf("%+v", e)
	}
}

func TestCloseCodesAreTheSpecCodes(t *testing.T) {
	for got, want := range map[uint16]uint16{
		CloseNormal: 1000, CloseGoingAway: 1001, CloseProtocolError: 1002, ClosePolicyViolation: 1008,
		CloseMessageTooBig: 1009, CloseTryAgainLater: 1013, CloseInvalidPayload: 1007,
	} {
		if got != want {
			t.Errorf("close code %d, want %d", got, want)
		}
	}
}

func TestAuthOKIsExactlyTheSpecShape(t *testing.T) {
	if got := string(AuthOKJSON(1700000000)); got != `{"type":"auth_ok","exp":1700000000}` {
		t.Fatalf("got %s", got)
	}
}

func TestParseAuthRecognisesARefresh(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"auth","token":"abc.def.ghi"}`:           "abc.def.ghi",
		`  {"token":"t","type":"auth"}  `:                 "t",
		`{"type":"auth"}`:                                 "",
		`{"type":"auth","token":"t","extra":[1,2,3]}`:     "t",
		"{\n  \"type\": \"auth\",\n  \"token\": \"x\"\n}": "x",
	} {
		tok, ok := ParseAuth([]byte(in))
		if !ok || tok != want {
			t.Errorf("ParseAuth(%q) = %q, %v; want %q, true", in, tok, ok, want)
		}
	}
}

func TestParseAuthLeavesEverythingElseToTheEcho(t *testing.T) {
	for _, in := range []string{
		``, `hello`, `auth`, `"auth"`, `{"type":"ping"}`, `{"type":"AUTH","token":"t"}`,
		`{"type":"auth","token":`, `{"kind":"auth"}`, `[{"type":"auth"}]`, `{"type":["auth"]}`,
	} {
		if tok, ok := ParseAuth([]byte(in)); ok {
			t.Errorf("ParseAuth(%q) = %q, true; want not an auth request", in, tok)
		}
	}
}

func TestEchoPrefixesTheText(t *testing.T) {
	for in, want := range map[string]string{"X": "Echo: X", "": "Echo: ", "héllo wörld": "Echo: héllo wörld"} {
		if got := string(Echo([]byte(in))); got != want {
			t.Errorf("Echo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEchoDoesNotAliasItsInput(t *testing.T) {
	in := []byte("abc")
	out := Echo(in)
	in[0] = 'z'
	if string(out) != "Echo: abc" {
		t.Fatalf("echo changed with its input: %q", out)
	}
}

func BenchmarkParseAuthOrdinaryText(b *testing.B) {
	text := []byte("just some chat text that is not an auth message")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseAuth(text); ok {
			b.Fatal("auth")
		}
	}
}
