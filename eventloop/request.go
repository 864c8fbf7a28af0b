//go:build linux

package eventloop

import (
	"bytes"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/rfc6455"
)

// headEnd is the length of the request head at the start of b (request line and header lines,
// through the blank line that ends them), or -1 while the blank line has not arrived. A bare
// LF ends a line too, as net/http accepts; parseHead then hands such a request to net/http.
// The first from bytes of b were looked at before and held no end, so a head arriving in
// many pieces is scanned once, not once per piece.
func headEnd(b []byte, from int) int {
	for i := max(from-2, 0); ; { // an end begun in the bytes before from finishes after it
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// parseHead reads the head of an upgrade request for path (head as delimited by headEnd) into
// the *http.Request net/http would have built for it, so admission runs the same code on both
// paths. It takes only the plain case: GET path HTTP/1.1, CRLF lines, one valid Host, valid
// header names and values, no body (neither Content-Length nor Transfer-Encoding), and
// Connection: upgrade with Upgrade: websocket. ok is false for anything else (another
// method, path or version, a request net/http would refuse or read a body of, a line folded
// or ending in a bare LF, a request that is no upgrade): net/http then serves it from its
// bytes, so every answer it gives stays its own. The request's strings share one copy of
// the head.
func parseHead(head []byte, path string) (r *http.Request, ok bool) {
	if len(head) < 4 || string(head[:4]) != "GET " {
		return nil, false
	}
	text := string(head)
	line, rest, ok := nextLine(text)
	if !ok {
		return nil, false
	}
	method, uri, proto, ok := requestLine(line)
	if !ok || method != http.MethodGet || proto != "HTTP/1.1" {
		return nil, false
	}
	if p, _, _ := strings.Cut(uri, "?"); p != path {
		return nil, false
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, false
	}
	h := make(http.Header, 12)
	values := make([]string, 0, 16)
	host, hosts := "", 0
	for {
		line, rest, ok = nextLine(rest)
		if !ok {
			return nil, false
		}
		if line == "" {
			break
		}
		name, value, ok := headerLine(line)
		if !ok {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(name) // no copy when name is canonical already
		switch key {
		case "Host":
			host, hosts = value, hosts+1
			continue
		case "Content-Length", "Transfer-Encoding":
			return nil, false
		}
		if prev, again := h[key]; again {
			h[key] = append(prev, value)
		} else { // every first value in one array, capped so that a second one copies
			values = append(values, value)
			h[key] = values[len(values)-1 : len(values) : len(values)]
		}
	}
	if hosts != 1 || !validHost(host) || !rfc6455.IsUpgrade(h) {
		return nil, false
	}
	r = &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       host,
		RequestURI: uri,
	}
	return r, true
}

// nextLine splits off the first CRLF line of s; ok is false when it ends in a bare LF or no
// LF is left.
func nextLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return "", "", false
	}
	return s[:i-1], s[i+1:], true
}

// requestLine splits "METHOD URI PROTO" at its two single spaces.
func requestLine(line string) (method, uri, proto string, ok bool) {
	m, rest, ok1 := strings.Cut(line, " ")
	u, p, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || m == "" || u == "" || strings.IndexByte(p, ' ') >= 0 {
		return "", "", "", false
	}
	return m, u, p, true
}

// headerLine splits "Name: value", the value trimmed of spaces and tabs. The name must be an
// RFC 9110 token (no space before the colon; a line starting with white space is a folded
// continuation, which net/http handles) and the value free of control characters but tab.
func headerLine(line string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(line, ":")
	if !ok || name == "" {
		return "", "", false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return "", "", false
		}
	}
	value = strings.Trim(value, " \t")
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
			return "", "", false
		}
	}
	return name, value, true
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c < 0x7f && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHost is a plain host[:port]: letters, digits and what a name, an IPv4 or a bracketed
// IPv6 literal use. Anything else (net/http's rules are broader) goes to net/http.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_':
		default:
			return false
		}
	}
	return true
}

// remoteAddr formats a peer as net.TCPAddr.String does (an IPv4-mapped address as IPv4).
func remoteAddr(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return (&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}).String()
	case *unix.SockaddrInet6:
		zone := ""
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return (&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: zone}).String()
	}
	return ""
}
