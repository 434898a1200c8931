// Package transform rewrites requests and responses as they pass through
// the gateway: headers (remove, rename, set, add), the request path (strip a
// prefix, rewrite with a segment template, add a prefix) and query
// parameters (remove, set).
//
// A [Spec] is the configuration, mapped one to one from YAML
// (routes[].transform). [Compile] validates it, reporting every problem at
// once, and turns it into a [Transform]: header names are canonicalised,
// value templates split into literal and variable parts, and path
// templates parsed into segments, so applying it per request does no
// parsing and allocates little (at most two allocations for any number of
// header, path and query operations: one string buffer shared by every new
// value and one slice backing every set header).
//
// # Order of operations
//
// Headers: remove, then rename, then set, then add. Path: strip_prefix, then
// match/replace (against what the strip left), then add_prefix. Query:
// remove, then set.
//
// # Variables
//
// Header and query values may contain a small, fixed set of variables:
//
//	${request_id}  the gateway's request id            (Vars.RequestID)
//	${client_ip}   the client address                  (Vars.ClientIP)
//	${subject}     the authenticated principal          (Vars.Subject)
//	${tenant}      the principal's tenant               (Vars.Tenant)
//	${route}       the name of the matched route        (Vars.Route)
//	${method}      the request method
//	${host}        the Host the client asked for
//	${path}        the request path as received (decoded)
//	${header.X-Name}  the first value of an incoming request header
//
// Any other "${" is a configuration error; a "$" not followed by "{" is a
// literal dollar sign. There is no general templating.
//
// Variables come from the client or from the gateway's view of it, so a
// value may turn out unusable: empty, or holding a control character (CR,
// LF, NUL...) that would split or corrupt a header. Such a value is never
// emitted. For set, the header (or query parameter) is deleted instead, so
// a value the client sent under that name cannot survive in its place; for
// add, nothing is added.
//
// # Use from the gateway
//
// [Transform.Middleware] works around any http.Handler. A reverse proxy can
// instead apply [Transform.ApplyRequest] to the outbound request in its
// Rewrite hook and [Transform.ApplyResponse] to the backend's headers in
// ModifyResponse; both only touch what they are configured to touch.
package transform

import (
	"net/http"
)

// Spec configures a transformation. Its zero value does nothing.
type Spec struct {
	Request  RequestSpec  `yaml:"request"`
	Response ResponseSpec `yaml:"response"`
}

// RequestSpec configures what happens to a request before it reaches the
// backend.
type RequestSpec struct {
	Headers HeaderOps `yaml:"headers"`
	Path    PathOps   `yaml:"path"`
	Query   QueryOps  `yaml:"query"`
}

// ResponseSpec configures what happens to a response's headers. Response
// transforms run on the backend's headers, before the gateway adds its own
// (request id, security headers), so they cannot remove or override those.
type ResponseSpec struct {
	Headers HeaderOps `yaml:"headers"`
}

// HeaderOps are header operations, applied in the order remove, rename,
// set, add. Header names are case-insensitive. Header names managed by the
// HTTP machinery itself (Host, Content-Length, Transfer-Encoding,
// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade) cannot be
// used.
type HeaderOps struct {
	// Set replaces every value of a header with one value (a template).
	// If the value expands to nothing usable, the header is deleted.
	Set map[string]string `yaml:"set"`
	// Add appends a value (a template) to a header's values. If the value
	// expands to nothing usable, nothing is added.
	Add map[string]string `yaml:"add"`
	// Remove deletes headers.
	Remove []string `yaml:"remove"`
	// Rename moves every value of a header (the key) to another name (the
	// value), replacing whatever that name held. If the header is absent,
	// nothing happens. A name may not be both a rename source and target.
	Rename map[string]string `yaml:"rename"`
}

// PathOps rewrite the request path, in the order StripPrefix, Match →
// Replace, AddPrefix. They work on decoded segments and keep percent-encoded
// characters (such as an encoded "/") encoded in the outbound request.
// Every path here starts with "/" and is written decoded ("/a b", not
// "/a%20b").
type PathOps struct {
	// StripPrefix removes leading whole segments: "/api" turns "/api/x"
	// into "/x" and "/api" into "/", but leaves "/apix" alone. If empty,
	// nothing is stripped.
	StripPrefix string `yaml:"strip_prefix"`
	// AddPrefix is put in front of the path: "/svc" turns "/x" into
	// "/svc/x". A path that StripPrefix reduced to nothing becomes just
	// AddPrefix, so swapping prefixes keeps a trailing slash or its
	// absence. If empty, nothing is added.
	AddPrefix string `yaml:"add_prefix"`
	// Match is a segment pattern such as "/api/v1/users/{id}/avatar":
	// literal segments must be equal, {name} captures one non-empty
	// segment, and a final {name...} captures the rest of the path
	// (possibly empty: "/a/{rest...}" matches "/a/" but not "/a"). A path
	// that does not match is left unchanged. Match and Replace go
	// together.
	Match string `yaml:"match"`
	// Replace is the new path, built from literal segments and whole
	// segments captured by Match: "/avatars/{id}". A rest capture is
	// written {name...} and must be last.
	Replace string `yaml:"replace"`
}

// QueryOps edit query parameters, remove first, then set. Parameters not
// named keep their order and their exact encoding. Names are
// case-sensitive.
type QueryOps struct {
	// Set gives a parameter exactly one value (a template). An existing
	// parameter keeps the position of its first occurrence; a new one is
	// appended. If the value expands to nothing usable, the parameter is
	// removed.
	Set map[string]string `yaml:"set"`
	// Remove deletes every occurrence of parameters.
	Remove []string `yaml:"remove"`
}

// Vars supplies the per-request values behind ${request_id}, ${client_ip},
// ${subject}, ${tenant} and ${route}; the gateway implements it from its
// request state. Each method is called at most once per Apply call, and
// only if a configured value uses it; "" means unknown. Implementations
// must be safe for concurrent use. A nil Vars makes these variables empty.
type Vars interface {
	RequestID(r *http.Request) string
	ClientIP(r *http.Request) string
	Subject(r *http.Request) string
	Tenant(r *http.Request) string
	Route(r *http.Request) string
}

// Problem is one thing wrong with a Spec. Key is the path of the
// offending setting, such as "request.headers.set.X-Foo" or
// "request.headers.remove[2]", spelled as in the Spec, so a configuration
// loader can point at the file and line it came from.
type Problem struct {
	Key string
	Msg string
}

// Error implements error, so a Problem can be returned or wrapped as one.
func (p Problem) Error() string { return "transform: " + p.Key + ": " + p.Msg }

// Transform is a compiled Spec. It is immutable and safe for concurrent
// use. A nil *Transform is empty: it does nothing.
type Transform struct {
	req  requestOps
	resp headerOps
	// headerVars are the canonical names behind ${header.X-Name}, indexed
	// by slot-slotHeader.
	headerVars []string
}

type requestOps struct {
	headers headerOps
	path    *pathOps // nil: no path operation
	query   *queryOps
}

// Empty reports whether t does nothing at all, so a caller can skip it.
func (t *Transform) Empty() bool {
	return t == nil || t.req.empty() && t.resp.empty()
}

func (r *requestOps) empty() bool {
	return r.headers.empty() && r.path == nil && r.query == nil
}
