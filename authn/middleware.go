package authn

import (
	"net/http"
	"strconv"
)

// Middleware authenticates every request with a and authorizes it with p.
// On success the Principal is stored in the request context ([FromContext])
// and next is called; on failure next is not called and onError(w, r, err)
// answers instead, with err an *Error (see [AsError]). A nil onError means
// [WriteError]. Public policies skip authentication entirely.
//
// It panics if a is nil and p is not public, as a route that can never be
// reached is a configuration bug.
func Middleware(a Authenticator, p Policy, onError func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	if a == nil && !p.Public {
		panic("authn: Middleware needs an Authenticator for a non-public policy")
	}
	if onError == nil {
		onError = WriteError
	}
	return func(next http.Handler) http.Handler {
		if p.Public {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pr, err := a.Authenticate(r)
			if err == nil {
				err = p.Authorize(pr)
			}
			if err != nil {
				onError(w, r, AsError(err))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), pr)))
		})
	}
}

// The bodies say nothing about which check failed: telling "bad signature"
// from "unknown key" or "expired" would help an attacker probe the verifier.
var (
	body401 = []byte(`{"type":"about:blank","title":"Unauthorized","status":401,"detail":"Valid credentials are required."}` + "\n")
	body403 = []byte(`{"type":"about:blank","title":"Forbidden","status":403,"detail":"The credentials do not grant access to this resource."}` + "\n")
)

// WriteError writes err as an RFC 9457 application/problem+json response:
// 401 or 403 from [AsError](err), with a WWW-Authenticate challenge per
// RFC 6750 — `Bearer` when credentials are missing, `Bearer
// error="invalid_token"` when a token was refused and `Bearer
// error="insufficient_scope"` for 403. The body carries no detail about the
// failure.
func WriteError(w http.ResponseWriter, _ *http.Request, err error) {
	e := AsError(err)
	if e == nil {
		e = unauthorized(ReasonInvalid, nil)
	}
	h := w.Header()
	body := body401
	switch {
	case e.Status == http.StatusForbidden:
		body = body403
		h.Set("WWW-Authenticate", `Bearer error="insufficient_scope"`)
	case e.Reason.invalidToken():
		h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	default:
		h.Set("WWW-Authenticate", "Bearer")
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	status := http.StatusUnauthorized
	if e.Status == http.StatusForbidden {
		status = http.StatusForbidden
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
