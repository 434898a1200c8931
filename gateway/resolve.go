package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Resolution says where a request would go and under which policy. It is
// what `api-gateway route` prints.
type Resolution struct {
	// Status is 200 when a route matches, else the status the gateway
	// would answer with (404, 405).
	Status int
	// Allow lists the methods allowed on the path when Status is 405.
	Allow string
	// Route is the matching route; Service its target.
	Route   Route
	Service string
	// Path is the path forwarded to the backend (cleaned, prefix
	// stripped).
	Path    string
	Timeout time.Duration
	Retries int
	// MaxConnsPerInstance is the service's bound on requests in flight
	// per instance (0: none).
	MaxConnsPerInstance int
	Instances           []string
}

// Resolve routes a hypothetical request without sending it. target is a
// path with an optional query; host may be empty.
func (g *Gateway) Resolve(method, host, target string) Resolution {
	t := g.tbl.Load()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return Resolution{Status: http.StatusBadRequest}
	}
	p, _ := cleanPath(u.Path)
	method = strings.ToUpper(method)
	e, kind := t.router.lookup(method, host, p)
	switch kind {
	case matchNone:
		return Resolution{Status: http.StatusNotFound, Path: p}
	case matchMethod:
		return Resolution{Status: http.StatusMethodNotAllowed, Allow: t.router.allowed(host, p), Path: p}
	}
	res := Resolution{Status: http.StatusOK, Route: e.route, Service: e.svc.name, Path: p, Timeout: e.svc.timeout, Retries: e.svc.retries,
		MaxConnsPerInstance: e.svc.maxConns}
	if res.Retries < 0 {
		res.Retries = 0
	}
	if e.route.StripPrefix {
		if s := normalizePrefix(e.route.Prefix); s != "/" {
			res.Path = strings.TrimPrefix(p, s)
			if res.Path == "" || res.Path[0] != '/' {
				res.Path = "/" + res.Path
			}
		}
	}
	for _, in := range e.svc.pool() {
		res.Instances = append(res.Instances, in.URL.String())
	}
	return res
}
