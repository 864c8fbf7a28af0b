package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/huleedu/websocket-service/config"
)

// clientIP is the address the per-IP handshake limit counts and the logs name. It is the TCP
// peer, unless the peer is one of the trusted proxies (TRUSTED_PROXIES): then it is the
// rightmost X-Forwarded-For address that is not itself a trusted proxy, since every proxy
// appends the address it received the request from and only the entries our own proxies
// added can be believed; whatever a client wrote to the left of them is ignored. When every
// listed address is trusted, the leftmost is the client. A malformed header is not evidence
// of anything: the peer stands.
func clientIP(r *http.Request, trusted config.Prefixes) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || len(trusted) == 0 || !trusted.Contains(peer) {
		return host
	}
	hops, ok := forwardedFor(r.Header)
	if !ok || len(hops) == 0 {
		return host
	}
	for i := len(hops) - 1; i >= 0; i-- {
		if !trusted.Contains(hops[i]) {
			return hops[i].String()
		}
	}
	return hops[0].String()
}

// forwardedFor parses every X-Forwarded-For header, in order, as one comma list (several
// headers mean the same as one joined by commas). An entry may carry a port
// ("192.0.2.1:4711", "[2001:db8::1]:4711"), as some proxies write it. It reports false when
// any entry is not an address.
func forwardedFor(h http.Header) ([]netip.Addr, bool) {
	var hops []netip.Addr
	for _, v := range h.Values("X-Forwarded-For") {
		for _, e := range strings.Split(v, ",") {
			e = strings.TrimSpace(e)
			addr, err := netip.ParseAddr(e)
			if err != nil {
				ap, perr := netip.ParseAddrPort(e)
				if perr != nil {
					return nil, false
				}
				addr = ap.Addr()
			}
			hops = append(hops, addr.Unmap().WithZone(""))
		}
	}
	return hops, true
}
