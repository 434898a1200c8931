package gateway

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// CORSSettings configures cross-origin resource sharing. CORS is off when
// AllowedOrigins is empty: browsers then refuse cross-origin calls.
type CORSSettings struct {
	// AllowedOrigins lists exact origins ("https://app.example.com"),
	// wildcard subdomains ("https://*.example.com") or "*" (any origin,
	// never combined with credentials).
	AllowedOrigins []string
	// AllowedMethods for preflights. If empty: GET, HEAD, POST, PUT,
	// PATCH, DELETE.
	AllowedMethods []string
	// AllowedHeaders a preflight may ask for. If empty: Authorization,
	// Content-Type, X-Request-ID, Idempotency-Key, X-API-Key.
	AllowedHeaders []string
	// ExposedHeaders lets scripts read these response headers.
	ExposedHeaders []string
	// AllowCredentials lets browsers send cookies and HTTP auth.
	AllowCredentials bool
	// MaxAge is how many seconds browsers may cache a preflight. If
	// zero, 600.
	MaxAge int
}

// SecurityHeaders are set on every response, gateway- or backend-made.
// Empty fields take the defaults; "-" omits a header.
type SecurityHeaders struct {
	// Disabled sets none of them.
	Disabled bool
	// FrameOptions: default "DENY".
	FrameOptions string
	// ContentTypeOptions: default "nosniff".
	ContentTypeOptions string
	// ReferrerPolicy: default "no-referrer".
	ReferrerPolicy string
	// ContentSecurityPolicy of gateway-made responses: default
	// "default-src 'none'; frame-ancestors 'none'".
	ContentSecurityPolicy string
	// HSTS is sent when the request came over TLS, directly or through a
	// trusted proxy. Default "max-age=31536000; includeSubDomains".
	HSTS string
}

type secHeader struct {
	name  string
	value []string
}

// edge is the compiled form of CORS and security-header settings.
type edge struct {
	origins     []string // exact, lower case
	wildcards   []string // suffixes such as ".example.com", with scheme prefix kept separately
	wildSchemes []string
	anyOrigin   bool
	creds       bool
	methods     string
	methodSet   []string
	headers     string
	headerSet   []string
	exposed     string
	maxAge      string
	cors        bool

	sec     []secHeader // set on every response
	secKeys []string
	csp     []string
	hsts    []string
}

func compileEdge(c CORSSettings, s SecurityHeaders) (*edge, error) {
	e := &edge{cors: len(c.AllowedOrigins) > 0, creds: c.AllowCredentials}
	for _, o := range c.AllowedOrigins {
		o = strings.ToLower(strings.TrimSpace(o))
		if o == "*" {
			if c.AllowCredentials {
				return nil, fmt.Errorf("cors: origin \"*\" cannot be combined with credentials")
			}
			e.anyOrigin = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("cors: origin %q is not scheme://host[:port]", o)
		}
		if strings.HasPrefix(u.Host, "*.") {
			e.wildSchemes = append(e.wildSchemes, u.Scheme+"://")
			e.wildcards = append(e.wildcards, u.Host[1:])
			continue
		}
		if strings.Contains(u.Host, "*") {
			return nil, fmt.Errorf("cors: origin %q: only a leading \"*.\" wildcard is allowed", o)
		}
		e.origins = append(e.origins, o)
	}
	e.methodSet = c.AllowedMethods
	if len(e.methodSet) == 0 {
		e.methodSet = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
	}
	for i, m := range e.methodSet {
		e.methodSet[i] = strings.ToUpper(m)
	}
	e.methods = strings.Join(e.methodSet, ", ")
	e.headerSet = c.AllowedHeaders
	if len(e.headerSet) == 0 {
		e.headerSet = []string{"Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key", "X-API-Key"}
	}
	e.headers = strings.Join(e.headerSet, ", ")
	e.exposed = strings.Join(c.ExposedHeaders, ", ")
	if c.MaxAge == 0 {
		c.MaxAge = 600
	}
	e.maxAge = strconv.Itoa(c.MaxAge)
	if !s.Disabled {
		add := func(name, v, def string) {
			if v == "" {
				v = def
			}
			if v != "-" {
				e.sec = append(e.sec, secHeader{http.CanonicalHeaderKey(name), []string{v}})
				e.secKeys = append(e.secKeys, http.CanonicalHeaderKey(name))
			}
		}
		add("X-Frame-Options", s.FrameOptions, "DENY")
		add("X-Content-Type-Options", s.ContentTypeOptions, "nosniff")
		add("Referrer-Policy", s.ReferrerPolicy, "no-referrer")
		if v := cmp.Or(s.ContentSecurityPolicy, "default-src 'none'; frame-ancestors 'none'"); v != "-" {
			e.csp = []string{v}
		}
		if v := cmp.Or(s.HSTS, "max-age=31536000; includeSubDomains"); v != "-" {
			e.hsts = []string{v}
		}
	}
	return e, nil
}

// allowOrigin reports whether origin may make cross-origin calls.
func (e *edge) allowOrigin(origin string) bool {
	if origin == "" || origin == "null" {
		return false
	}
	if e.anyOrigin {
		return true
	}
	o := strings.ToLower(origin)
	if slices.Contains(e.origins, o) {
		return true
	}
	for i, suffix := range e.wildcards {
		if rest, ok := strings.CutPrefix(o, e.wildSchemes[i]); ok && strings.HasSuffix(rest, suffix) && len(rest) > len(suffix) {
			host := rest[:len(rest)-len(suffix)]
			if !strings.ContainsAny(host, "/@:") {
				return true
			}
		}
	}
	return false
}

var (
	headerVaryOrigin    = []string{"Origin"}
	headerVaryPreflight = []string{"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
	headerTrue          = []string{"true"}
)

// applySecurity sets the security headers on a response about to be made.
func (e *edge) applySecurity(h http.Header, tls bool) {
	for _, kv := range e.sec {
		h[kv.name] = kv.value // shared, len == cap: an Add copies, never writes into it
	}
	if tls && e.hsts != nil {
		h["Strict-Transport-Security"] = e.hsts
	}
}

// cors handles CORS for r: it answers preflights itself (true) and adds the
// headers of an allowed origin to other responses.
func (e *edge) handleCORS(w http.ResponseWriter, r *http.Request) (answered bool) {
	if !e.cors {
		return false
	}
	origin := r.Header.Get("Origin")
	h := w.Header()
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if preflight {
		h["Vary"] = headerVaryPreflight
	} else {
		h["Vary"] = headerVaryOrigin
	}
	if origin == "" {
		return false
	}
	allowed := e.allowOrigin(origin)
	if preflight {
		method := strings.ToUpper(r.Header.Get("Access-Control-Request-Method"))
		if allowed && slices.Contains(e.methodSet, method) && e.headersAllowed(r.Header.Get("Access-Control-Request-Headers")) {
			e.originHeaders(h, origin)
			h.Set("Access-Control-Allow-Methods", e.methods)
			h.Set("Access-Control-Allow-Headers", e.headers)
			h.Set("Access-Control-Max-Age", e.maxAge)
		}
		// A refused preflight gets no CORS headers: the browser blocks the
		// call, and nothing reaches a backend either way.
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	if allowed {
		e.originHeaders(h, origin)
		if e.exposed != "" {
			h.Set("Access-Control-Expose-Headers", e.exposed)
		}
	}
	return false
}

func (e *edge) originHeaders(h http.Header, origin string) {
	if e.anyOrigin && !e.creds {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if e.creds {
		h["Access-Control-Allow-Credentials"] = headerTrue
	}
}

func (e *edge) headersAllowed(list string) bool {
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.ContainsFunc(e.headerSet, func(h string) bool { return strings.EqualFold(h, name) }) {
			return false
		}
	}
	return true
}
