package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// keys are generated once: RSA generation is slow under -race.
var keys struct {
	once sync.Once
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	ec3  *ecdsa.PrivateKey
	ed   ed25519.PrivateKey
}

func genKeys(t *testing.T) {
	t.Helper()
	keys.once.Do(func() {
		var err error
		if keys.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keys.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if keys.ec3, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
			panic(err)
		}
		if _, keys.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
}

func publicPEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func verifier(t *testing.T, s Settings) *Verifier {
	t.Helper()
	v, err := NewVerifier(s)
	if err != nil {
		t.Fatalf("NewVerifier(%s): %v", s.Algorithm, err)
	}
	return v
}

func hsVerifier(t *testing.T) *Verifier {
	return verifier(t, Settings{Algorithm: "HS256", Secret: secret})
}

func rsVerifier(t *testing.T) *Verifier {
	genKeys(t)
	return verifier(t, Settings{Algorithm: "RS256", PublicKeyPEM: publicPEM(t, keys.rsa)})
}

// sign signs arbitrary claims with method and key.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "groups": []string{"class7"}}
}

// checkRejected asserts that Verify refuses token with want, and that the error text does not
// contain the token or any of its three parts.
func checkRejected(t *testing.T, v *Verifier, token string, want error) {
	t.Helper()
	_, err := v.Verify(token)
	if !errors.Is(err, want) {
		t.Fatalf("Verify: err = %v, want %v", err, want)
	}
	leaks(t, err, token)
}

func leaks(t *testing.T, err error, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("error contains the token: %v", err)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Fatalf("error contains part of the token (%q): %v", part, err)
		}
	}
}

func TestEveryAlgorithmVerifiesItsOwnTokens(t *testing.T) {
	genKeys(t)
	for _, tc := range []struct {
		alg  string
		sign any
		pem  []byte
	}{
		{"HS256", secret, nil},
		{"HS384", secret, nil},
		{"HS512", secret, nil},
		{"RS256", keys.rsa, publicPEM(t, keys.rsa)},
		{"RS384", keys.rsa, publicPEM(t, keys.rsa)},
		{"RS512", keys.rsa, publicPEM(t, keys.rsa)},
		{"ES256", keys.ec, publicPEM(t, keys.ec)},
		{"ES384", keys.ec3, publicPEM(t, keys.ec3)},
		{"EdDSA", keys.ed, publicPEM(t, keys.ed)},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			v := verifier(t, Settings{Algorithm: tc.alg, Secret: secret, PublicKeyPEM: tc.pem})
			m, err := NewMinter(tc.alg, tc.sign, "", "", "")
			if err != nil {
				t.Fatalf("NewMinter: %v", err)
			}
			tok, err := m.Mint("u1", []string{"a", "b"}, time.Hour)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Subject != "u1" || !reflect.DeepEqual(c.Groups, []string{"a", "b"}) {
				t.Fatalf("claims %+v", c)
			}
			if d := time.Until(c.ExpiresAt); d < 59*time.Minute || d > time.Hour+time.Second {
				t.Fatalf("ExpiresAt %v is not an hour away", c.ExpiresAt)
			}
		})
	}
}

func TestMissingTokenIsErrMissing(t *testing.T) {
	_, err := hsVerifier(t).Verify("")
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("err = %v, want ErrMissing", err)
	}
}

func TestBadlySignedTokenIsRejected(t *testing.T) {
	tok := sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), validClaims())
	checkRejected(t, hsVerifier(t), tok, ErrInvalid)
}

func TestTamperedPayloadIsRejected(t *testing.T) {
	tok := sign(t, jwt.SigningMethodHS256, secret, validClaims())
	other := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "admin", "exp": time.Now().Add(time.Hour).Unix()})
	p := strings.Split(tok, ".")
	q := strings.Split(other, ".")
	checkRejected(t, hsVerifier(t), p[0]+"."+q[1]+"."+p[2], ErrInvalid)
}

func TestMalformedTokensAreRejected(t *testing.T) {
	for _, tok := range []string{"x", "a.b", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.%%%.sig"} {
		checkRejected(t, hsVerifier(t), tok, ErrInvalid)
	}
}

func TestExpiredTokenIsErrExpired(t *testing.T) {
	c := validClaims()
	c["exp"] = time.Now().Add(-time.Minute).Unix()
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, c), ErrExpired)
}

func TestLeewayToleratesSmallClockSkew(t *testing.T) {
	v := verifier(t, Settings{Algorithm: "HS256", Secret: secret, Leeway: 10 * time.Second})
	c := validClaims()
	c["exp"] = time.Now().Add(-3 * time.Second).Unix()
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c)); err != nil {
		t.Fatalf("token 3 s past exp with 10 s leeway: %v", err)
	}
}

func TestAlgNoneIsRejected(t *testing.T) {
	tok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims())
	checkRejected(t, hsVerifier(t), tok, ErrInvalid)
	checkRejected(t, rsVerifier(t), tok, ErrInvalid)
}

func TestAlgNoneIsRefusedAsAConfiguration(t *testing.T) {
	if _, err := NewVerifier(Settings{Algorithm: "none", Secret: secret}); err == nil {
		t.Fatal("NewVerifier accepted alg none")
	}
	if _, err := NewMinter("none", secret, "", "", ""); err == nil {
		t.Fatal("NewMinter accepted alg none")
	}
}

func TestHS256TokenIsRejectedByAnRS256Verifier(t *testing.T) {
	checkRejected(t, rsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, validClaims()), ErrInvalid)
}

// The classic algorithm confusion: an attacker signs HS256 with the server's public key as the
// HMAC secret. A verifier that let the token pick its algorithm would accept it.
func TestHS256TokenSignedWithThePublicKeyIsRejectedByAnRS256Verifier(t *testing.T) {
	genKeys(t)
	tok := sign(t, jwt.SigningMethodHS256, publicPEM(t, keys.rsa), validClaims())
	checkRejected(t, rsVerifier(t), tok, ErrInvalid)
}

func TestRS256TokenIsRejectedByAnHS256Verifier(t *testing.T) {
	genKeys(t)
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodRS256, keys.rsa, validClaims()), ErrInvalid)
}

func TestHS512TokenIsRejectedByAnHS256Verifier(t *testing.T) {
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS512, secret, validClaims()), ErrInvalid)
}

func TestES256TokenFromAnotherKeyIsRejected(t *testing.T) {
	genKeys(t)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v := verifier(t, Settings{Algorithm: "ES256", PublicKeyPEM: publicPEM(t, keys.ec)})
	checkRejected(t, v, sign(t, jwt.SigningMethodES256, other, validClaims()), ErrInvalid)
}

func TestTokenWithoutSubIsRejected(t *testing.T) {
	c := validClaims()
	delete(c, "sub")
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
}

func TestTokenWithEmptySubIsRejected(t *testing.T) {
	c := validClaims()
	c["sub"] = ""
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
}

func TestTokenWithNonStringSubIsRejected(t *testing.T) {
	c := validClaims()
	c["sub"] = 42
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
}

func TestTokenWithoutExpIsRejected(t *testing.T) {
	c := validClaims()
	delete(c, "exp")
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
}

func TestTokenNotYetValidIsRejected(t *testing.T) {
	c := validClaims()
	c["nbf"] = time.Now().Add(time.Hour).Unix()
	checkRejected(t, hsVerifier(t), sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
}

func TestIssuerIsCheckedWhenConfigured(t *testing.T) {
	v := verifier(t, Settings{Algorithm: "HS256", Secret: secret, Issuer: "huleedu"})
	c := validClaims()
	checkRejected(t, v, sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
	c["iss"] = "someone-else"
	checkRejected(t, v, sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
	c["iss"] = "huleedu"
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c)); err != nil {
		t.Fatalf("matching issuer: %v", err)
	}
}

func TestAudienceIsCheckedWhenConfigured(t *testing.T) {
	v := verifier(t, Settings{Algorithm: "HS256", Secret: secret, Audience: "websocket"})
	c := validClaims()
	checkRejected(t, v, sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
	c["aud"] = "billing"
	checkRejected(t, v, sign(t, jwt.SigningMethodHS256, secret, c), ErrInvalid)
	c["aud"] = []string{"billing", "websocket"}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c)); err != nil {
		t.Fatalf("audience list containing ours: %v", err)
	}
}

func TestMinterSetsIssuerAudienceAndGroupsClaimName(t *testing.T) {
	v := verifier(t, Settings{Algorithm: "HS256", Secret: secret, Issuer: "i", Audience: "a", GroupsClaim: "classes"})
	m, err := NewMinter("HS256", secret, "i", "a", "classes")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint("u9", []string{"g"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil || c.Subject != "u9" || !reflect.DeepEqual(c.Groups, []string{"g"}) {
		t.Fatalf("claims %+v, err %v", c, err)
	}
}

func TestGroupsClaimShapes(t *testing.T) {
	many := make([]string, MaxGroups+1)
	for i := range many {
		many[i] = fmt.Sprintf("g%d", i)
	}
	for _, tc := range []struct {
		name   string
		claim  string // name of the claim the verifier reads
		value  any    // nil: claim absent
		want   []string
		reject bool
	}{
		{name: "absent", value: nil, want: nil},
		{name: "list", value: []string{"a", "b"}, want: []string{"a", "b"}},
		{name: "empty list", value: []string{}, want: []string{}},
		{name: "duplicates dropped", value: []string{"a", "b", "a"}, want: []string{"a", "b"}},
		{name: "string", value: "a", reject: true},
		{name: "number", value: 7, reject: true},
		{name: "object", value: map[string]string{"a": "b"}, reject: true},
		{name: "list with a number", value: []any{"a", 1}, reject: true},
		{name: "list with an empty string", value: []any{"a", ""}, reject: true},
		{name: "over the limit", value: many, reject: true},
		{name: "custom claim name", claim: "classes", value: []string{"c7"}, want: []string{"c7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claim := tc.claim
			if claim == "" {
				claim = "groups"
			}
			v := verifier(t, Settings{Algorithm: "HS256", Secret: secret, GroupsClaim: tc.claim})
			c := jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()}
			if tc.value != nil {
				c[claim] = tc.value
			}
			tok := sign(t, jwt.SigningMethodHS256, secret, c)
			if tc.reject {
				checkRejected(t, v, tok, ErrInvalid)
				return
			}
			got, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(got.Groups) != len(tc.want) || (len(tc.want) > 0 && !reflect.DeepEqual(got.Groups, tc.want)) {
				t.Fatalf("groups %q, want %q", got.Groups, tc.want)
			}
		})
	}
}

func TestGroupsUnderAnotherClaimNameAreIgnored(t *testing.T) {
	v := verifier(t, Settings{Algorithm: "HS256", Secret: secret, GroupsClaim: "classes"})
	got, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, validClaims()))
	if err != nil || len(got.Groups) != 0 {
		t.Fatalf("groups %q, err %v; want none (the token has only a \"groups\" claim)", got.Groups, err)
	}
}

func TestOversizeTokenIsRejectedWithoutEcho(t *testing.T) {
	c := validClaims()
	c["pad"] = strings.Repeat("x", MaxTokenLength)
	tok := sign(t, jwt.SigningMethodHS256, secret, c)
	if len(tok) <= MaxTokenLength {
		t.Fatalf("test token is only %d bytes", len(tok))
	}
	checkRejected(t, hsVerifier(t), tok, ErrInvalid)
}

func TestTokenJustUnderTheSizeLimitIsAccepted(t *testing.T) {
	c := validClaims()
	c["pad"] = strings.Repeat("x", MaxTokenLength/2)
	tok := sign(t, jwt.SigningMethodHS256, secret, c)
	if _, err := hsVerifier(t).Verify(tok); err != nil {
		t.Fatalf("%d-byte token: %v", len(tok), err)
	}
}

func TestNewVerifierRefusesUnusableKeys(t *testing.T) {
	genKeys(t)
	for _, s := range []Settings{
		{Algorithm: "HS256"},
		{Algorithm: "RS256", PublicKeyPEM: []byte("not a pem")},
		{Algorithm: "RS256", PublicKeyPEM: publicPEM(t, keys.ec)},
		{Algorithm: "ES256", PublicKeyPEM: publicPEM(t, keys.rsa)},
		{Algorithm: "ES256", PublicKeyPEM: publicPEM(t, keys.ec3)},
		{Algorithm: "ES384", PublicKeyPEM: publicPEM(t, keys.ec)},
		{Algorithm: "EdDSA", PublicKeyPEM: publicPEM(t, keys.rsa)},
		{Algorithm: "XY256", Secret: secret},
	} {
		if _, err := NewVerifier(s); err == nil {
			t.Errorf("NewVerifier accepted %s with an unusable key", s.Algorithm)
		}
	}
}

func TestNewMinterRefusesAKeyOfTheWrongKind(t *testing.T) {
	if _, err := NewMinter("HS256", "a string, not bytes", "", "", ""); err == nil {
		t.Fatal("NewMinter accepted a string key")
	}
}

func TestVerifierIsSafeForConcurrentUse(t *testing.T) {
	v := hsVerifier(t)
	tok := sign(t, jwt.SigningMethodHS256, secret, validClaims())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if _, err := v.Verify(tok); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
