package server

import (
	"net/http/httptest"
	"testing"

	"github.com/huleedu/websocket-service/config"
)

func TestClientIPTakesForwardedForOnlyFromTrustedProxies(t *testing.T) {
	var proxies config.Prefixes
	if err := proxies.UnmarshalText([]byte("10.0.0.0/8, 192.0.2.7, fd00::/8")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		trusted config.Prefixes
		peer    string
		xff     []string // X-Forwarded-For header values, in order
		want    string
	}{
		{"no trusted proxies: the header is ignored", nil, "192.0.2.7:5555", []string{"203.0.113.9"}, "192.0.2.7"},
		{"untrusted peer: the header is ignored", proxies, "198.51.100.4:5555", []string{"203.0.113.9"}, "198.51.100.4"},
		{"trusted peer: the client it names", proxies, "10.1.1.1:5555", []string{"203.0.113.9"}, "203.0.113.9"},
		{"trusted peer without the header", proxies, "10.1.1.1:5555", nil, "10.1.1.1"},
		{"a spoofed leftmost entry changes nothing", proxies, "10.1.1.1:5555", []string{"6.6.6.6, 203.0.113.9"}, "203.0.113.9"},
		{"spoofing from an untrusted peer changes nothing", proxies, "203.0.113.9:5555", []string{"6.6.6.6, 10.2.2.2"}, "203.0.113.9"},
		{"trusted hops on the right are skipped", proxies, "10.1.1.1:5555", []string{"6.6.6.6, 203.0.113.9, 10.3.3.3, 192.0.2.7"}, "203.0.113.9"},
		{"several headers are one list in order", proxies, "10.1.1.1:5555", []string{"6.6.6.6", "203.0.113.9, 10.3.3.3"}, "203.0.113.9"},
		{"several headers: the last one's rightmost untrusted", proxies, "10.1.1.1:5555", []string{"203.0.113.9", "198.51.100.1"}, "198.51.100.1"},
		{"every address trusted: the leftmost", proxies, "10.1.1.1:5555", []string{"10.9.9.9, 192.0.2.7"}, "10.9.9.9"},
		{"entries with ports", proxies, "10.1.1.1:5555", []string{"203.0.113.9:4711, [2001:db8::1]:4711"}, "2001:db8::1"},
		{"IPv6 peer and client", proxies, "[fd00::5]:5555", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv4-mapped peer", proxies, "[::ffff:10.1.1.1]:5555", []string{"203.0.113.9"}, "203.0.113.9"},
		{"malformed header: the peer", proxies, "10.1.1.1:5555", []string{"203.0.113.9, unknown"}, "10.1.1.1"},
		{"empty entry: the peer", proxies, "10.1.1.1:5555", []string{"203.0.113.9,,"}, "10.1.1.1"},
		{"empty header: the peer", proxies, "10.1.1.1:5555", []string{""}, "10.1.1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientIP(r, tc.trusted); got != tc.want {
				t.Fatalf("clientIP(peer %s, X-Forwarded-For %q) = %s, want %s", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
}
