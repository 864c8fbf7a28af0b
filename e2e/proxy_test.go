package e2e_test

import (
	"net"
	"net/http"
	"testing"

	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/wsraw"
)

// upgradeFrom sends an upgrade request from the loopback address from, with the given
// X-Forwarded-For headers, and returns the HTTP status of the answer.
func upgradeFrom(t *testing.T, s *servicetest.Service, from string, token string, xff ...string) int {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	defer tr.CloseIdleConnections()
	req, err := wsraw.NewRequest(s.DialURL(token), wsraw.Options{Header: http.Header{"X-Forwarded-For": xff}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: wait}).Do(req)
	if err != nil {
		t.Fatalf("upgrade from %s: %v", from, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Behind an ingress every upgrade arrives from the ingress's address: with that address in
// TRUSTED_PROXIES the handshake limit counts the clients X-Forwarded-For names, each on its
// own; from any other peer the header is ignored, so a client cannot dodge the limit by
// writing one.
func TestHandshakeRateCountsForwardedClientsOnlyBehindTrustedProxies(t *testing.T) {
	const proxy, direct = "127.0.0.1", "127.0.0.2" // both reach the server over loopback
	eachEngine(t, func(t *testing.T, engine string) {
		// One handshake per address, refilled once in 1,000 s: the test never sees a refill.
		n := startNode(t, engine, embedded, map[string]string{"HANDSHAKE_RATE_PER_IP": "0.001", "TRUSTED_PROXIES": proxy + "/32"})
		tok := n.Token(t, "u1")
		for _, step := range []struct {
			from string
			xff  []string
			want int
			why  string
		}{
			{proxy, []string{"203.0.113.1"}, http.StatusSwitchingProtocols, "first client behind the proxy"},
			{proxy, []string{"203.0.113.2"}, http.StatusSwitchingProtocols, "second client behind the proxy, limited on its own"},
			{proxy, []string{"203.0.113.1"}, http.StatusTooManyRequests, "first client again"},
			{proxy, []string{"6.6.6.6, 203.0.113.2"}, http.StatusTooManyRequests, "second client again, with a spoofed entry to the left"},
			{direct, []string{"203.0.113.3"}, http.StatusSwitchingProtocols, "an untrusted peer"},
			{direct, []string{"203.0.113.4"}, http.StatusTooManyRequests, "the untrusted peer again, naming another client"},
		} {
			if got := upgradeFrom(t, n.Service, step.from, tok, step.xff...); got != step.want {
				t.Fatalf("%s (from %s, X-Forwarded-For %q): status %d, want %d", step.why, step.from, step.xff, got, step.want)
			}
		}
	})
}
