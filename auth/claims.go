package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// errUnusual is tokenClaims' refusal of a claims object it does not decode itself; Verify then
// decodes the token again into jwt.MapClaims, whose handling of every shape is the reference.
var errUnusual = errors.New("claims need the generic decoder")

// tokenClaims is the typed decoding of a token's claims: the registered claims the parser
// validates plus the configured groups claim, read straight from the JSON without building a
// map of interfaces (that map was most of the cost of a token check). It accepts only the
// ordinary shapes, with exactly the meaning jwt.MapClaims gives them: keys matched exactly
// (encoding/json would match struct fields case-insensitively), the last of duplicate keys
// wins, a zero date counts as absent. Anything else (null or mistyped values, escaped keys, a
// number past float64) fails with errUnusual, and Verify falls back to the MapClaims decoding,
// so every refusal and its reason stay what they were.
type tokenClaims struct {
	groupsClaim string

	sub, iss      string
	exp, nbf, iat *jwt.NumericDate
	aud           jwt.ClaimStrings
	groups        []string
}

func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.exp, nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.nbf, nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.iat, nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.aud, nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return c.iss, nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return c.sub, nil }

// UnmarshalJSON decodes the claims object data. encoding/json has checked that data is one
// valid JSON value before it calls this (json.Unmarshal and json.Decoder both do), so the scan
// only finds boundaries; on anything else it fails without reading past data.
func (c *tokenClaims) UnmarshalJSON(data []byte) error {
	s := scanner{b: data}
	if !s.consume('{') {
		return errUnusual
	}
	for !s.consume('}') {
		s.consume(',')
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return errUnusual
		}
		val := s.value()
		if err := c.field(key, val); err != nil {
			return err
		}
	}
	return nil
}

// field decodes one member. key is the raw bytes between its quotes (no escapes).
func (c *tokenClaims) field(key, val []byte) error {
	var err error
	switch string(key) {
	case "sub":
		c.sub, err = jsonString(val)
	case "iss":
		c.iss, err = jsonString(val)
	case "exp":
		c.exp, err = numericDate(val)
	case "nbf":
		c.nbf, err = numericDate(val)
	case "iat":
		c.iat, err = numericDate(val)
	case "aud":
		c.aud, err = audience(val)
	}
	if err == nil && string(key) == c.groupsClaim {
		c.groups, err = stringArray(val)
	}
	return err
}

// jsonString decodes a JSON string value; any other value is unusual.
func jsonString(val []byte) (string, error) {
	if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
		return "", errUnusual
	}
	inner := val[1 : len(val)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string // escapes or invalid UTF-8 (replaced, as encoding/json does)
	if err := json.Unmarshal(val, &s); err != nil {
		return "", errUnusual
	}
	return s, nil
}

// numericDate decodes a date in seconds as MapClaims does (a float64; 0 is no date).
func numericDate(val []byte) (*jwt.NumericDate, error) {
	if len(val) == 0 || (val[0] != '-' && (val[0] < '0' || val[0] > '9')) {
		return nil, errUnusual
	}
	f, err := strconv.ParseFloat(string(val), 64)
	if err != nil {
		return nil, errUnusual
	}
	if f == 0 {
		return nil, nil
	}
	whole, frac := math.Modf(f)
	return jwt.NewNumericDate(time.Unix(int64(whole), int64(frac*1e9))), nil
}

// audience decodes aud: one string or a list of strings.
func audience(val []byte) (jwt.ClaimStrings, error) {
	if len(val) > 0 && val[0] == '"' {
		s, err := jsonString(val)
		return jwt.ClaimStrings{s}, err
	}
	if len(val) == 0 || val[0] != '[' {
		return nil, errUnusual
	}
	return stringArray(val)
}

// stringArray decodes a list of strings; null is no list.
func stringArray(val []byte) ([]string, error) {
	if string(val) == "null" {
		return nil, nil
	}
	s := scanner{b: val}
	if !s.consume('[') {
		return nil, errUnusual
	}
	out := []string{}
	for !s.consume(']') {
		s.consume(',')
		e, err := jsonString(s.value())
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// scanner walks JSON that encoding/json has already validated, so it only finds boundaries.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// consume skips space and then ch if it is next.
func (s *scanner) consume(ch byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == ch {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes and returns what is between its quotes.
func (s *scanner) str() ([]byte, bool) {
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	end := bytes.IndexByte(s.b[s.i+1:], '"')
	if end < 0 {
		return nil, false
	}
	key := s.b[s.i+1 : s.i+1+end]
	if bytes.IndexByte(key, '\\') >= 0 {
		return nil, false
	}
	s.i += end + 2
	return key, true
}

// value returns the next value's bytes and moves past it.
func (s *scanner) value() []byte {
	s.skipSpace()
	start := s.i
	depth := 0
	for s.i < len(s.b) {
		switch ch := s.b[s.i]; ch {
		case '"':
			s.i++
			for s.i < len(s.b) && s.b[s.i] != '"' {
				if s.b[s.i] == '\\' {
					s.i++
				}
				s.i++
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return s.b[start:s.i]
			}
			depth--
		case ',':
			if depth == 0 {
				return s.b[start:s.i]
			}
		case ' ', '\t', '\n', '\r':
			if depth == 0 {
				v := s.b[start:s.i]
				s.skipSpace()
				return v
			}
		}
		s.i++
	}
	s.i = min(s.i, len(s.b)) // a string cut short after a backslash
	return s.b[start:s.i]
}
