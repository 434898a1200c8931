package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/pyairtable/api-gateway/authn"
)

// Identity headers: the gateway is the only source of these. Whatever a
// client sends under these names (or any X-Auth-* name) is removed before
// the gateway sets them from the authenticated principal.
var (
	headerUserID      = http.CanonicalHeaderKey("X-User-ID")
	headerUserRoles   = http.CanonicalHeaderKey("X-User-Roles")
	headerUserPerms   = http.CanonicalHeaderKey("X-User-Permissions")
	headerTenantID    = http.CanonicalHeaderKey("X-Tenant-ID")
	headerAuthMethod  = http.CanonicalHeaderKey("X-Auth-Method")
	headerAuthSubject = http.CanonicalHeaderKey("X-Auth-Subject")
)

// Problems of authentication and authorization. They carry no detail: what
// exactly was wrong with a credential helps only an attacker.
var (
	ProblemUnauthorized = Problem{Type: "unauthorized", Title: "Authentication required", Status: http.StatusUnauthorized}
	ProblemForbidden    = Problem{Type: "forbidden", Title: "Not allowed", Status: http.StatusForbidden}
)

// Principal returns the authenticated principal of the request whose
// context is ctx, or nil (public route, or outside the gateway).
func Principal(ctx context.Context) *authn.Principal {
	if st := stateFrom(ctx); st != nil {
		return st.principal
	}
	return nil
}

// isIdentityHeader reports whether a client-sent header name is one the
// gateway owns. Names are compared case-insensitively and with '_' taken as
// '-', so X_User_Id is the same header as X-User-ID.
func isIdentityHeader(name string) bool {
	n := len(name)
	if n < 6 || (name[0] != 'x' && name[0] != 'X') || (name[1] != '-' && name[1] != '_') {
		return false
	}
	rest := name[2:]
	for _, want := range [...]string{"user-id", "user-roles", "user-permissions", "tenant-id"} {
		if equalFoldDash(rest, want) {
			return true
		}
	}
	return len(rest) >= 5 && equalFoldDash(rest[:5], "auth-")
}

// equalFoldDash compares ASCII case-insensitively, '_' matching '-'.
func equalFoldDash(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if a == '_' {
			a = '-'
		}
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// authenticate runs the route's authentication and authorization. On a
// public route credentials are optional: a valid one still identifies the
// caller to the backend, an invalid one is ignored.
func (g *Gateway) authorize(e *routeEntry, auth authn.Authenticator, r *http.Request, st *requestState) error {
	pol := e.policy
	if auth == nil {
		if pol.Public {
			return nil
		}
		return &authn.Error{Reason: authn.ReasonMissing, Status: http.StatusUnauthorized}
	}
	p, err := auth.Authenticate(r)
	if pol.Public {
		if err == nil {
			st.principal = p
		}
		return nil
	}
	if errors.Is(err, authn.ErrNoCredentials) {
		return &authn.Error{Reason: authn.ReasonMissing, Status: http.StatusUnauthorized}
	}
	if err != nil {
		return err
	}
	if err := pol.Authorize(p); err != nil {
		return err
	}
	if err := tenantCheck(e, r, p); err != nil {
		return err
	}
	st.principal = p
	return nil
}

var errForbiddenTenant = &authn.Error{Reason: authn.ReasonForbiddenTenant, Status: http.StatusForbidden}

// tenantCheck refuses a request that names a tenant — in X-Tenant-ID or in
// the route's tenant path segment — other than its principal's. Only API
// keys without a tenant (service-to-service callers) act across tenants.
func tenantCheck(e *routeEntry, r *http.Request, p *authn.Principal) error {
	crossTenant := p.Tenant == "" && p.Method == "api_key"
	named := func(t string) error {
		if t == "" || crossTenant || t == p.Tenant {
			return nil
		}
		return errForbiddenTenant
	}
	for k, vs := range r.Header {
		if len(k) == len("X-Tenant-Id") && equalFoldDash(k, "x-tenant-id") {
			for _, v := range vs {
				if err := named(strings.TrimSpace(v)); err != nil {
					return err
				}
			}
		}
	}
	if n := e.route.TenantSegment; n > 0 {
		seg := pathSegment(r.URL.Path, n)
		if seg == "" {
			return errForbiddenTenant
		}
		return named(seg)
	}
	return nil
}

// pathSegment returns the n-th (1-based) segment of p, or "".
func pathSegment(p string, n int) string {
	for i := 0; i < n; i++ {
		if len(p) == 0 || p[0] != '/' {
			return ""
		}
		p = p[1:]
		if i == n-1 {
			if j := strings.IndexByte(p, '/'); j >= 0 {
				return p[:j]
			}
			return p
		}
		j := strings.IndexByte(p, '/')
		if j < 0 {
			return ""
		}
		p = p[j:]
	}
	return ""
}

// writeAuthError answers a failed authentication (401, with the RFC 6750
// challenge) or authorization (403).
func (g *Gateway) writeAuthError(w http.ResponseWriter, r *http.Request, err error) {
	e := authn.AsError(err)
	if e != nil && g.onAuthFailure != nil {
		g.onAuthFailure(string(e.Reason))
	}
	if e != nil && e.Status == http.StatusForbidden {
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope"`)
		WriteProblem(w, r, ProblemForbidden)
		return
	}
	challenge := "Bearer"
	if e != nil && e.Reason != authn.ReasonMissing {
		challenge = `Bearer error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	WriteProblem(w, r, ProblemUnauthorized)
}

// setIdentity sets the identity headers of the outbound request from the
// principal. stripClientHeaders has removed whatever the client sent under
// those names.
func (st *requestState) setIdentity(h http.Header) {
	p := st.principal
	if p == nil {
		return
	}
	// Values live in the request's state (see val): no allocation per
	// header. The two subject headers share one value slice, which is
	// full (len == cap), so an Add to either copies it.
	sub := st.val(5, p.Subject)
	h[headerUserID] = sub
	h[headerAuthSubject] = sub
	h[headerAuthMethod] = st.val(6, p.Method)
	if len(p.Roles) > 0 {
		h[headerUserRoles] = st.val(7, strings.Join(p.Roles, ","))
	}
	if len(p.Permissions) > 0 {
		h[headerUserPerms] = []string{strings.Join(p.Permissions, ",")}
	}
	if p.Tenant != "" {
		h[headerTenantID] = st.val(8, p.Tenant)
	}
}

// VerifyToken authenticates a bearer token with the gateway's current
// authenticator, as if it came in an Authorization header; the WebSocket
// hub uses it for the token of its auth message.
func (g *Gateway) VerifyToken(ctx context.Context, token string) (*authn.Principal, error) {
	auth := g.tbl.Load().auth
	if auth == nil {
		return nil, &authn.Error{Reason: authn.ReasonMissing, Status: http.StatusUnauthorized}
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return nil, err
	}
	r.Header.Set("Authorization", "Bearer "+token)
	return auth.Authenticate(r)
}
