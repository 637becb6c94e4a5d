package webhook

import (
	"net/netip"
	"strings"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// sourceAddr is the callback's source address: the connection's peer, or,
// when trustForwardedFor is set and the request carries X-Forwarded-For, the
// header's last entry, which is the address the nearest proxy saw. Earlier
// entries are whatever the client claimed and are never trusted.
func sourceAddr(remoteAddr string, forwardedFor []string, trustForwardedFor bool) (netip.Addr, bool) {
	if trustForwardedFor && len(forwardedFor) > 0 {
		last := forwardedFor[len(forwardedFor)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		return parseHostAddr(strings.TrimSpace(last))
	}
	return parseHostAddr(remoteAddr)
}

// parseHostAddr reads an address with or without a port, as peers and
// proxies write it: 192.0.2.1, 192.0.2.1:443, 2001:db8::1, [2001:db8::1]:443.
func parseHostAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// sourceAllowed reports whether addr is inside one of the ranges. Ranges that
// do not parse match nothing (the API server refuses them anyway).
func sourceAllowed(addr netip.Addr, cidrs []snsv1alpha1.CIDR) bool {
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(string(c)))
		if err != nil {
			continue
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
