// Package auth verifies the JWTs that browsers present when they connect, and mints them for
// the `token` subcommand, tests and the load harness. It pins one configured algorithm (no
// `alg` switching, never `none`), requires `exp` and a non-empty `sub`, and checks `iss`/`aud`
// when configured. It never puts a token into an error message.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors returned by Verify. ErrExpired is reported to the client as TOKEN_EXPIRED, every
// other failure as AUTH_FAILED.
var (
	ErrMissing = errors.New("no token")
	ErrExpired = errors.New("token expired")
	ErrInvalid = errors.New("token invalid")
)

// MaxTokenLength bounds what Verify will parse: a token past it is refused before any base64
// or JSON work, so a hostile megabyte header costs nothing.
const MaxTokenLength = 8 << 10

// MaxGroups bounds the groups one token may name; each becomes a subscription.
const MaxGroups = 256

// Claims is what the service uses from a verified token.
type Claims struct {
	Subject   string
	Groups    []string
	ExpiresAt time.Time
}

// Settings configure a Verifier.
type Settings struct {
	Algorithm    string // HS256 … EdDSA
	Secret       []byte // HMAC algorithms
	PublicKeyPEM []byte // RS*, ES*, EdDSA
	Issuer       string // checked when set
	Audience     string // checked when set
	GroupsClaim  string // claim holding the list of group ids; "groups" when empty
	// Leeway tolerates clock skew between the token issuer and this node.
	Leeway time.Duration
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	key         any
	parser      *jwt.Parser
	groupsClaim string
}

// NewVerifier builds a Verifier, parsing the public key for asymmetric algorithms.
func NewVerifier(s Settings) (*Verifier, error) {
	method := jwt.GetSigningMethod(s.Algorithm)
	if method == nil || s.Algorithm == "none" {
		return nil, fmt.Errorf("unsupported JWT algorithm %q", s.Algorithm)
	}
	key, err := verificationKey(s)
	if err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{method.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(s.Leeway),
	}
	if s.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(s.Issuer))
	}
	if s.Audience != "" {
		opts = append(opts, jwt.WithAudience(s.Audience))
	}
	gc := s.GroupsClaim
	if gc == "" {
		gc = "groups"
	}
	return &Verifier{key: key, parser: jwt.NewParser(opts...), groupsClaim: gc}, nil
}

func verificationKey(s Settings) (any, error) {
	switch s.Algorithm {
	case "HS256", "HS384", "HS512":
		if len(s.Secret) == 0 {
			return nil, errors.New("empty HMAC secret")
		}
		return s.Secret, nil
	case "RS256", "RS384", "RS512":
		k, err := jwt.ParseRSAPublicKeyFromPEM(s.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("RSA public key: %w", err)
		}
		return k, nil
	case "ES256", "ES384":
		k, err := jwt.ParseECPublicKeyFromPEM(s.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("EC public key: %w", err)
		}
		want := map[string]int{"ES256": 256, "ES384": 384}[s.Algorithm]
		if k.Curve.Params().BitSize != want {
			return nil, fmt.Errorf("EC public key is P-%d, %s needs P-%d", k.Curve.Params().BitSize, s.Algorithm, want)
		}
		return k, nil
	case "EdDSA":
		k, err := jwt.ParseEdPublicKeyFromPEM(s.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("Ed25519 public key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("unsupported JWT algorithm %q", s.Algorithm)
}

// Verify checks a token and returns its claims. Errors wrap ErrMissing, ErrExpired or
// ErrInvalid with a reason safe to log (never the token).
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrMissing
	}
	if len(token) > MaxTokenLength {
		return Claims{}, fmt.Errorf("%w: %d bytes is over the %d-byte limit", ErrInvalid, len(token), MaxTokenLength)
	}
	tc := &tokenClaims{groupsClaim: v.groupsClaim}
	_, err := v.parser.ParseWithClaims(token, tc, v.keyFunc)
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return v.verifyMap(token) // not a shape tokenClaims decodes (see there), or malformed
	}
	if err != nil {
		return Claims{}, refusal(err)
	}
	return v.claims(tc.sub, tc.exp, len(tc.groups), tc.groups, nil)
}

// verifyMap is Verify decoding the claims into jwt.MapClaims: the reference decoding, used
// for every claims object tokenClaims leaves to it.
func (v *Verifier) verifyMap(token string) (Claims, error) {
	mc := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, mc, v.keyFunc); err != nil {
		return Claims{}, refusal(err)
	}
	sub, _ := mc["sub"].(string)
	exp, err := mc.GetExpirationTime()
	if err != nil {
		exp = nil
	}
	switch groups := mc[v.groupsClaim].(type) {
	case nil:
		return v.claims(sub, exp, 0, nil, nil)
	case []any:
		list := make([]string, 0, len(groups))
		for _, e := range groups {
			s, ok := e.(string)
			if !ok {
				return v.claims(sub, exp, len(groups), nil, errNotStrings)
			}
			list = append(list, s)
		}
		return v.claims(sub, exp, len(groups), list, nil)
	default:
		return v.claims(sub, exp, 0, nil, errors.New("must be a list of strings"))
	}
}

func (v *Verifier) keyFunc(*jwt.Token) (any, error) { return v.key, nil }

// refusal is the error for a token the parser refused.
func refusal(err error) error {
	if errors.Is(err, jwt.ErrTokenExpired) {
		return ErrExpired
	}
	return fmt.Errorf("%w: %s", ErrInvalid, reason(err))
}

var errNotStrings = errors.New("must be a list of non-empty strings")

// claims applies the checks past the parser's: a non-empty sub, an exp, and a groups claim of
// at most MaxGroups (n, counted before duplicates are dropped) non-empty strings; groupsErr is
// a groups claim of the wrong shape.
func (v *Verifier) claims(sub string, exp *jwt.NumericDate, n int, groups []string, groupsErr error) (Claims, error) {
	if sub == "" {
		return Claims{}, fmt.Errorf("%w: sub claim missing or empty", ErrInvalid)
	}
	if exp == nil {
		return Claims{}, fmt.Errorf("%w: exp claim missing", ErrInvalid)
	}
	if n > MaxGroups {
		groupsErr = fmt.Errorf("%d groups is over the limit of %d", n, MaxGroups)
	}
	out, err := dedupe(groups, groupsErr)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %s claim: %v", ErrInvalid, v.groupsClaim, err)
	}
	return Claims{Subject: sub, Groups: out, ExpiresAt: exp.Time}, nil
}

// reason maps a jwt error to a short fixed phrase, so no token content can reach a log.
func reason(err error) string {
	for _, r := range []struct {
		err  error
		text string
	}{
		{jwt.ErrTokenMalformed, "malformed"},
		{jwt.ErrTokenUnverifiable, "unverifiable (algorithm not allowed)"},
		{jwt.ErrTokenSignatureInvalid, "bad signature"},
		{jwt.ErrTokenRequiredClaimMissing, "required claim missing"},
		{jwt.ErrTokenInvalidIssuer, "wrong issuer"},
		{jwt.ErrTokenInvalidAudience, "wrong audience"},
		{jwt.ErrTokenNotValidYet, "not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "used before issued"},
		{jwt.ErrTokenInvalidClaims, "invalid claims"},
	} {
		if errors.Is(err, r.err) {
			return r.text
		}
	}
	return "rejected"
}

// dedupe checks that every group is a non-empty string and drops repeats, keeping the order;
// nil groups (no claim) stay nil.
func dedupe(groups []string, err error) ([]string, error) {
	if err != nil || groups == nil {
		return nil, err
	}
	out := make([]string, 0, len(groups))
	seen := make(map[string]struct{}, len(groups))
	for _, s := range groups {
		if s == "" {
			return nil, errNotStrings
		}
		if _, dup := seen[s]; dup {
			continue
		}
		seen[s] = struct{}{}
		out = append(out, s)
	}
	return out, nil
}

// Minter signs tokens. It exists for the `token` subcommand, tests and the load harness.
type Minter struct {
	method jwt.SigningMethod
	key    any
	issuer string
	aud    string
	groups string
}

// NewMinter signs with alg and key: a []byte secret for HS*, or a crypto.Signer
// (*rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey) for the others.
func NewMinter(alg string, key any, issuer, audience, groupsClaim string) (*Minter, error) {
	method := jwt.GetSigningMethod(alg)
	if method == nil || alg == "none" {
		return nil, fmt.Errorf("unsupported JWT algorithm %q", alg)
	}
	switch key.(type) {
	case []byte, *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey, crypto.Signer:
	default:
		return nil, fmt.Errorf("signing key of type %T is not usable with %s", key, alg)
	}
	if groupsClaim == "" {
		groupsClaim = "groups"
	}
	return &Minter{method: method, key: key, issuer: issuer, aud: audience, groups: groupsClaim}, nil
}

// Mint returns a token for sub with the given groups, valid for ttl from now.
func (m *Minter) Mint(sub string, groups []string, ttl time.Duration) (string, error) {
	now := time.Now()
	c := jwt.MapClaims{"sub": sub, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if len(groups) > 0 {
		c[m.groups] = groups
	}
	if m.issuer != "" {
		c["iss"] = m.issuer
	}
	if m.aud != "" {
		c["aud"] = m.aud
	}
	s, err := jwt.NewWithClaims(m.method, c).SignedString(m.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
