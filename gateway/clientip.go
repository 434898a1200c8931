package gateway

import (
	"net/http"
	"net/netip"
	"strings"
)

// Proxies is a set of trusted proxy networks. Only a peer inside it may
// speak for the client through X-Forwarded-For; everyone else's forwarding
// headers are discarded. The zero value trusts nobody.
type Proxies struct {
	prefixes []netip.Prefix
}

// NewProxies builds a set from CIDR prefixes or single addresses
// ("10.0.0.0/8", "127.0.0.1", "::1").
func NewProxies(cidrs ...string) (Proxies, error) {
	var p Proxies
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if pf, err := netip.ParsePrefix(c); err == nil {
			p.prefixes = append(p.prefixes, pf.Masked())
			continue
		}
		a, err := netip.ParseAddr(c)
		if err != nil {
			return Proxies{}, &invalidProxyError{c}
		}
		p.prefixes = append(p.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return p, nil
}

type invalidProxyError struct{ s string }

func (e *invalidProxyError) Error() string {
	return "gateway: trusted proxy " + `"` + e.s + `"` + " is not an IP address or CIDR prefix"
}

// Contains reports whether a is a trusted proxy.
func (p Proxies) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, pf := range p.prefixes {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// Empty reports whether no proxy is trusted.
func (p Proxies) Empty() bool { return len(p.prefixes) == 0 }

// peerAddr parses the host part of a RemoteAddr ("1.2.3.4:5678", "[::1]:80").
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

// v4Host returns the address of an "a.b.c.d:port" peer, or "" for any
// other form. Parsed by netip (which refuses leading zeros), that address
// is already in the canonical form Addr.String would allocate.
func v4Host(remote string) string {
	i := strings.LastIndexByte(remote, ':')
	if i < 7 || strings.IndexByte(remote[:i], ':') >= 0 {
		return ""
	}
	return remote[:i]
}

// ClientIP returns the address of the client that made r: the connection's
// peer, unless the peer is a trusted proxy, in which case X-Forwarded-For is
// walked right to left and the first address that is not itself a trusted
// proxy is the client. Malformed entries stop the walk at the last trusted
// hop, so a client cannot smuggle an address past a proxy that appended
// its own. The walk does not allocate.
func (p Proxies) ClientIP(r *http.Request) netip.Addr {
	return p.clientIP(peerAddr(r.RemoteAddr), r)
}

// clientIP is ClientIP for a peer address already parsed.
func (p Proxies) clientIP(peer netip.Addr, r *http.Request) netip.Addr {
	if !peer.IsValid() || len(p.prefixes) == 0 || !p.Contains(peer) {
		return peer
	}
	client := peer
	values := r.Header["X-Forwarded-For"]
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for len(v) > 0 {
			j := strings.LastIndexByte(v, ',')
			part := strings.TrimSpace(v[j+1:])
			if j < 0 {
				v = ""
			} else {
				v = v[:j]
			}
			if part == "" {
				continue
			}
			a, err := netip.ParseAddr(part)
			if err != nil {
				// "[::1]:80" or "1.2.3.4:80" forms some proxies write.
				ap, err2 := netip.ParseAddrPort(part)
				if err2 != nil {
					return client
				}
				a = ap.Addr()
			}
			a = a.Unmap()
			client = a
			if !p.Contains(a) {
				return client
			}
		}
	}
	return client
}
