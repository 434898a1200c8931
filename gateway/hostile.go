package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
)

// Limits bound what a client may send. Zero values take the defaults.
type Limits struct {
	// MaxURLLength bounds the request target (414 beyond). If zero, 8192.
	MaxURLLength int
	// MaxHeaderCount bounds the number of header lines (431 beyond). If
	// zero, 100.
	MaxHeaderCount int
	// AllowUnderscoreHeaders keeps headers whose names contain '_'. They
	// are dropped by default, as nginx does: some frameworks read X_User
	// and X-User as the same header, which lets a client slip past a
	// check made on one spelling.
	AllowUnderscoreHeaders bool
	// MaxConnsPerIP caps concurrent connections from one client address
	// (counted at the listener). If zero, 4096. Negative: no cap.
	MaxConnsPerIP int
	// AllowedHosts, when set, is the list of Host values served (port
	// ignored); other hosts get 421.
	AllowedHosts []string
}

func (l Limits) withDefaults() Limits {
	if l.MaxURLLength == 0 {
		l.MaxURLLength = 8192
	}
	if l.MaxHeaderCount == 0 {
		l.MaxHeaderCount = 100
	}
	if l.MaxConnsPerIP == 0 {
		l.MaxConnsPerIP = 4096
	}
	return l
}

// Problems for hostile or malformed requests.
var (
	ProblemURITooLong      = Problem{Type: "uri-too-long", Title: "Request target too long", Status: http.StatusRequestURITooLong}
	ProblemHeadersTooLarge = Problem{Type: "headers-too-large", Title: "Too many request headers", Status: http.StatusRequestHeaderFieldsTooLarge}
	ProblemMisdirected     = Problem{Type: "unknown-host", Title: "Host not served here", Status: http.StatusMisdirectedRequest}
	ProblemBadPath         = Problem{Type: "bad-path", Title: "Path not accepted", Status: http.StatusBadRequest}
	ProblemBadFraming      = Problem{Type: "bad-framing", Title: "Ambiguous request framing", Status: http.StatusBadRequest}
	ProblemRequestTimeout  = Problem{Type: "request-timeout", Title: "The request body did not arrive in time", Status: http.StatusRequestTimeout}
	ProblemIncompleteBody  = Problem{Type: "incomplete-body", Title: "The request body could not be read", Status: http.StatusBadRequest}
)

// overrideHeaders let a client ask some frameworks to route or dispatch a
// request differently from what the gateway checked. Removed unless a
// route opts in.
var overrideHeaders = []string{
	"X-Original-Url", "X-Rewrite-Url", "X-Original-Method", "X-Http-Method-Override",
	"X-Http-Method", "X-Method-Override", "X-Override-Url", "X-Forwarded-Path", "X-Forwarded-Prefix",
}

// pathProblem reports why a request path is refused, or "" when it is
// acceptable. raw is the path as sent (escaped), decoded as Go decoded it.
// Encoded separators and dot segments are refused because backends decode
// them differently from the gateway: the path checked here would not be the
// path served there.
func pathProblem(raw, decoded string, allowEncodedSlash bool) string {
	for i := 0; i < len(decoded); i++ {
		c := decoded[i]
		if c < 0x20 || c == 0x7f {
			return "control character in path"
		}
		if c == '\\' {
			return "backslash in path"
		}
	}
	if strings.IndexByte(decoded, ';') >= 0 {
		return "path parameters (;) are not accepted"
	}
	if strings.IndexByte(raw, '%') < 0 {
		return ""
	}
	lower := strings.ToLower(raw)
	if !allowEncodedSlash && (strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c")) {
		return "encoded slash in path"
	}
	// An encoded dot segment ("%2e", "%2e%2e", ".%2e") smuggles a ".."
	// past checks made on the raw form.
	for _, seg := range strings.Split(lower, "/") {
		if strings.Contains(seg, "%2e") {
			if d := strings.ReplaceAll(seg, "%2e", "."); d == "." || d == ".." {
				return "encoded dot segment in path"
			}
		}
		if strings.Contains(seg, "%00") {
			return "encoded NUL in path"
		}
	}
	return ""
}

// rawPath returns the path part of the request target as the client sent it.
func rawPath(r *http.Request) string {
	p := r.RequestURI
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		if u := r.URL; u != nil {
			return u.EscapedPath()
		}
	}
	return p
}

// headerLines counts the request's header lines.
func headerLines(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}

// stripClientHeaders removes from the outbound request what the client may
// not pass on, in one pass over the headers: identity headers in any
// spelling (the gateway alone sets them), underscore headers and routing
// overrides.
func stripClientHeaders(h http.Header, allowUnderscore, allowOverride bool) {
	for k := range h {
		if isIdentityHeader(k) || (!allowUnderscore && strings.IndexByte(k, '_') >= 0) {
			delete(h, k)
		}
	}
	if !allowOverride {
		for _, k := range overrideHeaders {
			delete(h, k)
		}
	}
}

// bodyWatch remembers why reading the client's body failed, so that the
// answer blames the client (408, 400) and not the backend (502).
type bodyWatch struct {
	io.ReadCloser
	err error
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// clientBodyProblem maps a failed body read to the client's fault.
func clientBodyProblem(err error) (Problem, bool) {
	if err == nil {
		return Problem{}, false
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return Problem{}, false // handled as 413
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ProblemRequestTimeout, true
	}
	return ProblemIncompleteBody, true
}

// screen applies the limits that need no route: URL length, header count
// and served hosts.
func (t *table) screen(r *http.Request) (Problem, bool) {
	if len(r.RequestURI) > t.limits.MaxURLLength {
		return ProblemURITooLong, false
	}
	if headerLines(r.Header) > t.limits.MaxHeaderCount {
		return ProblemHeadersTooLarge, false
	}
	if t.hosts != nil && !t.hosts[hostKey(r.Host)] {
		return ProblemMisdirected, false
	}
	return Problem{}, true
}

// sameRouteAnyCase reports whether the lower-case form of a path with
// capital letters routes where the path itself does. A backend that
// matches paths case-insensitively would otherwise serve /API/ADMIN
// (routed by a catch-all) as /api/admin, past that route's checks.
func (t *table) sameRouteAnyCase(method, host, p string, e *routeEntry) bool {
	upper := false
	for i := 0; i < len(p); i++ {
		if c := p[i]; 'A' <= c && c <= 'Z' {
			upper = true
			break
		}
	}
	if !upper {
		return true
	}
	le, kind := t.router.lookup(method, host, strings.ToLower(p))
	return kind != matchOK || le == e
}
