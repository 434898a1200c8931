package gateway

import (
	"net/http"
	"net/netip"
	"path"
	"strings"
	"testing"

	"github.com/pyairtable/api-gateway/balancer"
)

// FuzzRouting checks path normalisation and route matching together: the
// cleaned path is clean and stable, a match is always on a segment
// boundary of exactly the path that would be forwarded, and a path the
// edge accepts never routes differently from its lower-case form without
// being refused.
func FuzzRouting(f *testing.F) {
	for _, s := range []string{"/api/v1/users", "/api/v1/users/", "/api/v1/usersX", "/api/v1/public/../admin", "//api//v1/./users/me",
		"/API/v1/users", "/api/v1/users;x=1", "/a/%2e%2e/b", "/", "", "/..", "/api/v1/workflows/run", "/api/v1/users/me/../../admin"} {
		f.Add(s, "GET")
	}
	g, err := New(Config{
		Services: []Service{{Name: "s", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:1", 1)}}},
		Routes:   benchRoutes,
	})
	if err != nil {
		f.Fatal(err)
	}
	rt := g.tbl.Load().router
	f.Fuzz(func(t *testing.T, p, method string) {
		c, _ := cleanPath(p)
		if p != "" && p[0] == '/' {
			if c2, changed := cleanPath(c); changed || c2 != c {
				t.Fatalf("cleanPath not idempotent: %q → %q → %q", p, c, c2)
			}
			if want := path.Clean(p); strings.TrimSuffix(c, "/") != strings.TrimSuffix(want, "/") && c != want {
				t.Fatalf("cleanPath(%q) = %q, path.Clean gives %q", p, c, want)
			}
		}
		e, kind := rt.lookup(method, "", c)
		if kind != matchOK {
			return
		}
		r := e.route
		if r.Path != "" {
			if trimTrailingSlash(c) != trimTrailingSlash(r.Path) {
				t.Fatalf("%q matched exact route %q", c, r.Path)
			}
		} else {
			pre := normalizePrefix(r.Prefix)
			if pre != "/" && c != pre && !strings.HasPrefix(c, pre+"/") {
				t.Fatalf("%q matched prefix %q off a segment boundary", c, pre)
			}
		}
		if !e.allows(strings.ToUpper(method)) && !e.allows(method) {
			t.Fatalf("%s %q matched route %q that does not allow the method", method, c, r.Name)
		}
	})
}

// FuzzClientIP checks that the client address is always either the peer
// or an address written in X-Forwarded-For, that an untrusted peer can
// never choose it, and that the peer's address taken from RemoteAddr
// without allocating is the one Addr.String would write.
func FuzzClientIP(f *testing.F) {
	f.Add("10.0.0.1:1234", "203.0.113.7, 10.0.0.2")
	f.Add("203.0.113.9:80", "1.2.3.4")
	f.Add("[::1]:80", "::1, 2001:db8::1, garbage")
	f.Add("10.0.0.1:1", "")
	f.Add("::ffff:10.0.0.1", "")
	f.Add("[::ffff:203.0.113.9]:443", "")
	proxies, _ := NewProxies("10.0.0.0/8", "::1")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{}}
		if xff != "" {
			r.Header["X-Forwarded-For"] = []string{xff}
		}
		got := proxies.ClientIP(r)
		peer := peerAddr(remote)
		if h := v4Host(remote); peer.Is4() && h != "" && h != peer.String() {
			t.Fatalf("peer %q: v4Host %q, Addr.String %q", remote, h, peer)
		}
		if !peer.IsValid() || !proxies.Contains(peer) {
			if got != peer {
				t.Fatalf("untrusted peer %q: client %v, want the peer", remote, got)
			}
			return
		}
		if got == peer {
			return
		}
		found := false
		for _, part := range strings.Split(xff, ",") {
			part = strings.TrimSpace(part)
			if a, err := netip.ParseAddr(part); err == nil && a.Unmap() == got {
				found = true
			} else if ap, err := netip.ParseAddrPort(part); err == nil && ap.Addr().Unmap() == got {
				found = true
			}
		}
		if !found {
			t.Fatalf("client %v is neither the peer %q nor in X-Forwarded-For %q", got, remote, xff)
		}
	})
}

// FuzzHeaderSanitising checks that no spelling of an identity header
// survives, comparing isIdentityHeader with a plain reference.
func FuzzHeaderSanitising(f *testing.F) {
	for _, s := range []string{"X-User-ID", "x_user_id", "X-Tenant-Id", "X-Auth-Anything", "X_AUTH_", "X-Userid", "X-User-Roles", "X-Request-ID", "Authorization"} {
		f.Add(s)
	}
	ref := func(name string) bool {
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		switch n {
		case "x-user-id", "x-user-roles", "x-user-permissions", "x-tenant-id":
			return true
		}
		return strings.HasPrefix(n, "x-auth-")
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := isIdentityHeader(name), ref(name); got != want {
			t.Fatalf("isIdentityHeader(%q) = %v, want %v", name, got, want)
		}
		h := http.Header{name: {"spoof"}, "X-Kept": {"1"}}
		stripClientHeaders(h, false, false)
		for k := range h {
			if ref(k) || strings.Contains(k, "_") {
				t.Fatalf("header %q survived sanitising", k)
			}
		}
	})
}
