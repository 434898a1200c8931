package gateway

import (
	"github.com/pyairtable/api-gateway/authn"
	"net/http"
	"path"
	"slices"
	"sort"
	"strings"
)

// routeEntry is a route compiled for the routing table.
type routeEntry struct {
	route   Route
	methods []string // upper case; nil means any method
	handler http.Handler
	svc     *service
	policy  authn.Policy

	split           *split
	mirror          *mirrorer
	fallback        *service
	fallbackProblem *Problem
}

// allows reports whether the entry accepts method. A route that accepts GET
// accepts HEAD, as net/http's ServeMux does.
func (e *routeEntry) allows(method string) bool {
	if e.methods == nil {
		return true
	}
	for _, m := range e.methods {
		if m == method || (method == http.MethodHead && m == http.MethodGet) {
			return true
		}
	}
	return false
}

// pathNode holds the routes that share one path key: method-specific ones
// first (they win), then at most one route for any method.
type pathNode struct {
	specific []*routeEntry
	any      *routeEntry
}

func (n *pathNode) match(method string) *routeEntry {
	for _, e := range n.specific {
		if e.allows(method) {
			return e
		}
	}
	return n.any
}

// hostTable is the routing table of one host (or of any host).
type hostTable struct {
	exact  map[string]*pathNode
	prefix map[string]*pathNode
}

// router is an immutable, precomputed routing table. Lookups are map probes
// on substrings of the cleaned path, one per path segment at most: no
// regular expressions and no allocation.
type router struct {
	hosts map[string]*hostTable // lower-case host without port
	any   *hostTable
}

type matchKind int

const (
	matchNone matchKind = iota
	matchOK
	matchMethod // the path is routed, but not for this method
)

func newRouter() *router {
	return &router{hosts: map[string]*hostTable{}, any: newHostTable()}
}

func newHostTable() *hostTable {
	return &hostTable{exact: map[string]*pathNode{}, prefix: map[string]*pathNode{}}
}

// add inserts e. It returns an error string when e conflicts with a route
// already present (same host, path or prefix, and an overlapping method set).
func (rt *router) add(e *routeEntry) (conflict string) {
	t := rt.any
	if h := e.route.Host; h != "" {
		h = strings.ToLower(h)
		if t = rt.hosts[h]; t == nil {
			t = newHostTable()
			rt.hosts[h] = t
		}
	}
	m, key := t.prefix, normalizePrefix(e.route.Prefix)
	if e.route.Path != "" {
		m, key = t.exact, trimTrailingSlash(e.route.Path)
	}
	n := m[key]
	if n == nil {
		n = &pathNode{}
		m[key] = n
	}
	if e.methods == nil {
		if n.any != nil {
			return n.any.route.Name
		}
		n.any = e
		return ""
	}
	for _, o := range n.specific {
		for _, meth := range e.methods {
			if slices.Contains(o.methods, meth) {
				return o.route.Name
			}
		}
	}
	n.specific = append(n.specific, e)
	return ""
}

// lookup finds the route for a request. p must be a cleaned path.
func (rt *router) lookup(method, host, p string) (*routeEntry, matchKind) {
	var kind matchKind
	if len(rt.hosts) > 0 {
		if t := rt.hosts[hostKey(host)]; t != nil {
			e, k := t.lookup(method, p)
			if k == matchOK {
				return e, k
			}
			kind = k
		}
	}
	e, k := rt.any.lookup(method, p)
	if k == matchOK {
		return e, k
	}
	if k > kind {
		kind = k
	}
	return nil, kind
}

func (t *hostTable) lookup(method, p string) (*routeEntry, matchKind) {
	kind := matchNone
	key := trimTrailingSlash(p)
	if n := t.exact[key]; n != nil {
		if e := n.match(method); e != nil {
			return e, matchOK
		}
		kind = matchMethod
	}
	if len(t.prefix) == 0 {
		return nil, kind
	}
	// Longest prefix first: the whole path, then each shorter run of whole
	// segments, then "/".
	for k := key; ; {
		if n := t.prefix[k]; n != nil {
			if e := n.match(method); e != nil {
				return e, matchOK
			}
			kind = matchMethod
		}
		if k == "/" {
			break
		}
		i := strings.LastIndexByte(k, '/')
		if i <= 0 {
			k = "/"
		} else {
			k = k[:i]
		}
	}
	return nil, kind
}

// allowed lists the methods that some route accepts for the path, for the
// Allow header of a 405. It runs only on that error path.
func (rt *router) allowed(host, p string) string {
	set := map[string]bool{}
	collect := func(n *pathNode) {
		if n == nil {
			return
		}
		for _, e := range n.specific {
			for _, m := range e.methods {
				set[m] = true
				if m == http.MethodGet {
					set[http.MethodHead] = true
				}
			}
		}
	}
	tables := []*hostTable{rt.any}
	if t := rt.hosts[hostKey(host)]; t != nil {
		tables = append(tables, t)
	}
	key := trimTrailingSlash(p)
	for _, t := range tables {
		collect(t.exact[key])
		for k := key; ; {
			collect(t.prefix[k])
			if k == "/" {
				break
			}
			if i := strings.LastIndexByte(k, '/'); i <= 0 {
				k = "/"
			} else {
				k = k[:i]
			}
		}
	}
	ms := make([]string, 0, len(set))
	for m := range set {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	return strings.Join(ms, ", ")
}

// hostKey lower-cases host and drops a port, without allocating in the
// common case of an already lower-case host.
func hostKey(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

func trimTrailingSlash(p string) string {
	if len(p) > 1 && p[len(p)-1] == '/' {
		return p[:len(p)-1]
	}
	return p
}

func normalizePrefix(p string) string {
	if p == "" {
		return "/"
	}
	return trimTrailingSlash(p)
}

// cleanPath returns p with dot segments and duplicate slashes resolved, and
// whether it changed. A trailing slash is kept, since many backends tell
// "/x/" from "/x". Already-clean paths — nearly all — are returned without
// allocating.
func cleanPath(p string) (string, bool) {
	if isCleanPath(p) {
		return p, false
	}
	c := path.Clean("/" + p)
	if len(p) > 0 && p[len(p)-1] == '/' && c != "/" {
		c += "/"
	}
	return c, c != p
}

func isCleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if p[i] != '/' && p[i] != '.' {
			continue
		}
		if p[i] == '/' {
			if p[i-1] == '/' {
				return false
			}
			continue
		}
		// A '.' at the start of a segment: "." or ".." segments are not clean.
		if p[i-1] != '/' {
			continue
		}
		j := i + 1
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' {
			return false
		}
	}
	return true
}
