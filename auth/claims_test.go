package auth

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signRaw signs a claims object given as raw JSON with HS256.
func signRaw(t *testing.T, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
	if err != nil {
		t.Fatal(err)
	}
	return unsigned + "." + enc.EncodeToString(sig)
}

// TestTypedClaimsDecodeAsTheMapDoes checks that Verify (typed claims, falling back to
// jwt.MapClaims for unusual shapes) gives every claims object the same result, claims or
// error, as decoding into jwt.MapClaims alone.
func TestTypedClaimsDecodeAsTheMapDoes(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()
	bodies := []string{
		`{"sub":"u","exp":%d}`,
		`{"sub":"u","exp":%d,"groups":["a","b","a"]}`,
		`{"sub":"u","exp":%d,"groups":[]}`,
		`{"sub":"u","exp":%d,"groups":null}`,
		`{"sub":"u","exp":%d,"groups":["a",""]}`,
		`{"sub":"u","exp":%d,"groups":["a",1]}`,
		`{"sub":"u","exp":%d,"groups":"a"}`,
		`{"sub":"u","exp":%d,"groups":{"a":1}}`,
		`{"sub":"u","exp":%d,"roles":["r"],"groups":["g"]}`,
		`{"Sub":"u","exp":%d}`,
		`{"sub":"u","EXP":%d}`,
		`{"sub":"u","exp":%d,"Groups":["a"]}`,
		`{"sub":"","exp":%d}`,
		`{"sub":7,"exp":%d}`,
		`{"sub":null,"exp":%d}`,
		`{"sub":"a\"b\u00e9","exp":%d}`,
		`{"sub":"x","sub":"y","exp":%d}`,
		`{"sub":"u","exp":"%d"}`,
		`{"sub":"u","exp":%d.5}`,
		`{"sub":"u","exp":0,"x":%d}`,
		`{"sub":"u","exp":null,"x":%d}`,
		`{"sub":"u","exp":%d,"exp":1e400}`,
		`{"sub":"u","exp":%d,"nbf":9999999999}`,
		`{"sub":"u","exp":%d,"iat":"x"}`,
		`{"sub":"u","exp":%d,"iss":"iss","aud":"aud"}`,
		`{"sub":"u","exp":%d,"iss":"other","aud":["x","aud"]}`,
		`{"sub":"u","exp":%d,"aud":[1]}`,
		`{"sub":"u","exp":%d,"aud":7}`,
		`{"sub":"u","exp":%d,"aud":[]}`,
		`{"s\u0075b":"u","exp":%d}`,
		` { "sub" : "u" , "exp" : %d , "groups" : [ "a" , "b" ] , "n" : {"k":[1,"]}",{}]} } `,
		`{"sub":"u","exp":%d,"groups":["\ud800x","é"]}`,
		`["sub","exp",%d]`,
		`{"sub":"u","exp":%d`,
	}
	for _, s := range []Settings{
		{Algorithm: "HS256", Secret: secret},
		{Algorithm: "HS256", Secret: secret, Issuer: "iss", Audience: "aud", GroupsClaim: "roles", Leeway: 5 * time.Second},
	} {
		v, err := NewVerifier(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bodies {
			for _, e := range []int64{exp, past} {
				body := fmt.Sprintf(b, e)
				tok := signRaw(t, body)
				got, gotErr := v.Verify(tok)
				want, wantErr := v.verifyMap(tok)
				if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
					t.Errorf("%s (groups claim %q): Verify = %+v, %v; MapClaims = %+v, %v", body, v.groupsClaim, got, gotErr, want, wantErr)
				}
			}
		}
	}
}

// TestTypedClaimsNeverReadPastInvalidInput feeds tokenClaims every prefix of a claims object
// (encoding/json never passes it invalid JSON, but a scan must not depend on that for safety).
func TestTypedClaimsNeverReadPastInvalidInput(t *testing.T) {
	body := ` {"sub":"a\"b","exp":1e9,"aud":["x"],"groups":["g","h"],"n":{"k":[1,"]}",{}]}} `
	for i := range len(body) + 1 {
		c := &tokenClaims{groupsClaim: "groups"}
		_ = c.UnmarshalJSON([]byte(body[:i]))
	}
}
