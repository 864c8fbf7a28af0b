package bench

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/huleedu/websocket-service/auth"
)

// TokenOptions say where connection tokens come from: minted with a secret (--secret), with
// a key read from a file (--key-file: a PEM private key, or an HMAC secret as the file's
// text), or read ready-made from a file with one token per line (--token-file).
type TokenOptions struct {
	Secret      string        `json:"secret,omitempty"`
	KeyFile     string        `json:"key_file,omitempty"`
	File        string        `json:"token_file,omitempty"`
	Algorithm   string        `json:"alg,omitempty"` // default HS256, or what the PEM key implies
	Issuer      string        `json:"iss,omitempty"`
	Audience    string        `json:"aud,omitempty"`
	GroupsClaim string        `json:"groups_claim,omitempty"`
	TTL         time.Duration `json:"ttl"`
}

// Tokens hands out connection i's token.
type Tokens struct {
	minter *auth.Minter
	list   []string // from a token file
	ttl    time.Duration
}

// maxTokenFile bounds how much of a token file is read (tokens are < 8 KiB each).
const maxTokenFile = 64 << 20

// NewTokens prepares the configured token source.
func NewTokens(o TokenOptions) (*Tokens, error) {
	ttl := o.TTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	if o.File != "" {
		list, err := readTokenFile(o.File)
		if err != nil {
			return nil, err
		}
		return &Tokens{list: list, ttl: ttl}, nil
	}
	alg, key, err := signingKey(o)
	if err != nil {
		return nil, err
	}
	m, err := auth.NewMinter(alg, key, o.Issuer, o.Audience, o.GroupsClaim)
	if err != nil {
		return nil, fmt.Errorf("token minter: %w", err)
	}
	return &Tokens{minter: m, ttl: ttl}, nil
}

// Minted reports whether tokens are minted for the harness's own identities (rather than
// read from a file, whose subjects and groups the harness does not choose).
func (t *Tokens) Minted() bool { return t.minter != nil }

// Token returns connection i's token.
func (t *Tokens) Token(i int, id Identity) (string, error) {
	if t.minter == nil {
		return t.list[i%len(t.list)], nil
	}
	tok, err := t.minter.Mint(id.User, id.Groups, t.ttl)
	if err != nil {
		return "", fmt.Errorf("mint token for connection %d: %w", i, err)
	}
	return tok, nil
}

// signingKey resolves the algorithm and key from a secret or a key file.
func signingKey(o TokenOptions) (string, any, error) {
	if o.Secret != "" && o.KeyFile != "" {
		return "", nil, errors.New("give --secret or --key-file, not both")
	}
	alg := o.Algorithm
	if o.KeyFile == "" {
		if o.Secret == "" {
			return "", nil, errors.New("no token source: give --secret (the server's WEBSOCKET_SERVICE_JWT_SECRET_KEY), --key-file or --token-file")
		}
		if alg == "" {
			alg = "HS256"
		}
		return alg, []byte(o.Secret), nil
	}
	raw, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return "", nil, fmt.Errorf("read key file: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		secret := bytes.TrimSpace(raw)
		if len(secret) == 0 {
			return "", nil, fmt.Errorf("key file %s is empty", o.KeyFile)
		}
		if alg == "" {
			alg = "HS256"
		}
		return alg, secret, nil
	}
	key, err := parsePrivateKey(raw)
	if err != nil {
		return "", nil, fmt.Errorf("key file %s: %w", o.KeyFile, err)
	}
	if alg == "" {
		switch k := key.(type) {
		case *rsa.PrivateKey:
			alg = "RS256"
		case *ecdsa.PrivateKey:
			alg = map[int]string{256: "ES256", 384: "ES384"}[k.Curve.Params().BitSize]
		case ed25519.PrivateKey:
			alg = "EdDSA"
		}
	}
	return alg, key, nil
}

func parsePrivateKey(pemBytes []byte) (any, error) {
	if k, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes); err == nil {
		return k, nil
	}
	if k, err := jwt.ParseECPrivateKeyFromPEM(pemBytes); err == nil {
		return k, nil
	}
	if k, err := jwt.ParseEdPrivateKeyFromPEM(pemBytes); err == nil {
		return k, nil
	}
	return nil, errors.New("not an RSA, EC or Ed25519 private key in PEM")
}

func readTokenFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open token file: %w", err)
	}
	defer f.Close()
	var list []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 16<<10), auth.MaxTokenLength+2)
	read := 0
	for sc.Scan() {
		read += len(sc.Bytes()) + 1
		if read > maxTokenFile {
			return nil, fmt.Errorf("token file %s is over %d MiB", path, maxTokenFile>>20)
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := tokenSubject(line); err != nil {
			return nil, fmt.Errorf("token file %s, token %d: %w", path, len(list)+1, err)
		}
		list = append(list, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read token file %s: %w", path, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("token file %s has no tokens", path)
	}
	return list, nil
}

// tokenSubject reads the unverified `sub` of a token, to show which user a file's token is
// for; the harness never trusts it for anything else.
func tokenSubject(tok string) (string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT (want three dot-separated parts)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("JWT payload: %w", err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf("JWT payload: %w", err)
	}
	return c.Sub, nil
}
