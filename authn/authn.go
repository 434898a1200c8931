// Package authn authenticates HTTP requests into a [Principal] and authorizes
// them against a [Policy].
//
// An [Authenticator] turns a request into a Principal. The package ships two:
// [JWT] (Bearer tokens signed with HMAC, RSA, ECDSA or Ed25519 keys, given
// statically or fetched from a JWKS endpoint) and [APIKeys] (keys presented in
// a header and compared by SHA-256 hash in constant time). [Chain] tries
// several in order. [Middleware] puts an Authenticator and a Policy in front of
// any http.Handler and stores the Principal in the request context, where
// [FromContext] finds it.
//
// Failures are *[Error] values carrying a [Reason] (for metrics such as
// "auth failures by reason") and the HTTP status, 401 or 403. The reason is
// never sent to the client: the default error writer answers with a generic
// RFC 9457 problem document so that a caller cannot probe which check failed.
//
// Tokens and keys are never logged and never kept in error messages.
package authn

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"
)

// ErrNoCredentials is returned by an Authenticator when the request carries
// none of the credentials it understands, so that a [Chain] can try the next.
var ErrNoCredentials = errors.New("authn: no credentials")

// ErrInvalidSettings is wrapped by constructors that refuse their settings.
var ErrInvalidSettings = errors.New("authn: invalid settings")

// ErrInvalidKey is wrapped by [ParsePublicKeyPEM] and [NewJWT] when key
// material is unusable (wrong type, too small, private instead of public).
var ErrInvalidKey = errors.New("authn: invalid key")

// Principal is who a request acts for.
//
// A Principal returned by an Authenticator may be shared between requests
// (the JWT cache hands out the same value for the same token): treat it and
// its slices as read-only.
type Principal struct {
	Subject     string
	Roles       []string
	Permissions []string
	Tenant      string
	// Method is "jwt" or "api_key".
	Method string
	// Issuer is the token's iss claim; empty for API keys.
	Issuer string
	// ExpiresAt is the token's exp claim; zero for API keys.
	ExpiresAt time.Time
	// KeyName names the API key that authenticated the request, for logs.
	// The key itself is never kept.
	KeyName string
}

// Authentication methods reported in [Principal.Method].
const (
	MethodJWT    = "jwt"
	MethodAPIKey = "api_key"
)

// HasRole reports whether p has role r. A nil Principal has no roles.
func (p *Principal) HasRole(r string) bool {
	return p != nil && slices.Contains(p.Roles, r)
}

// HasPermission reports whether p has permission perm.
func (p *Principal) HasPermission(perm string) bool {
	return p != nil && slices.Contains(p.Permissions, perm)
}

// HasAnyRole reports whether p has at least one of roles.
func (p *Principal) HasAnyRole(roles ...string) bool {
	for _, r := range roles {
		if p.HasRole(r) {
			return true
		}
	}
	return false
}

// HasAllPermissions reports whether p has every one of perms.
func (p *Principal) HasAllPermissions(perms ...string) bool {
	for _, perm := range perms {
		if !p.HasPermission(perm) {
			return false
		}
	}
	return true
}

// Authenticator authenticates a request into a Principal.
type Authenticator interface {
	// Authenticate returns ErrNoCredentials when the request carries none of
	// the credentials this authenticator understands (so a Chain can try the
	// next one), or an *Error for bad credentials. It must be safe for
	// concurrent use and must not modify r.
	Authenticate(r *http.Request) (*Principal, error)
}

// Reason classifies an authentication or authorization failure. Reasons are
// stable strings suitable as metric labels.
type Reason string

// Failure reasons.
const (
	ReasonMissing             Reason = "missing"       // no credentials at all
	ReasonMalformed           Reason = "malformed"     // unparsable header or token
	ReasonBadSignature        Reason = "bad_signature" // signature does not verify
	ReasonExpired             Reason = "expired"
	ReasonNotYetValid         Reason = "not_yet_valid" // nbf or iat in the future
	ReasonBadIssuer           Reason = "bad_issuer"
	ReasonBadAudience         Reason = "bad_audience"
	ReasonMissingClaim        Reason = "missing_claim" // exp (or a required aud) absent
	ReasonUnknownKey          Reason = "unknown_key"   // no key for the token's kid
	ReasonBadAlgorithm        Reason = "bad_algorithm" // alg refused or not matching the key
	ReasonTooLarge            Reason = "too_large"
	ReasonBadAPIKey           Reason = "bad_api_key"
	ReasonForbiddenRole       Reason = "forbidden_role"
	ReasonForbiddenPermission Reason = "forbidden_permission"
	ReasonForbiddenTenant     Reason = "forbidden_tenant"
	// ReasonInvalid is used for errors from third-party Authenticators that
	// are not an *Error.
	ReasonInvalid Reason = "invalid"
)

// invalidToken reports whether a 401 with this reason concerns a token that
// was presented but refused, which RFC 6750 signals with
// error="invalid_token".
func (r Reason) invalidToken() bool {
	switch r {
	case ReasonMissing, ReasonBadAPIKey, ReasonInvalid:
		return false
	}
	return true
}

// Error is an authentication (Status 401) or authorization (Status 403)
// failure. Err, when set, holds the underlying cause for logs; it never
// contains the token or key. An Error is not modified after it is returned
// and may be shared between goroutines.
type Error struct {
	Reason Reason
	Status int
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "authn: " + string(e.Reason)
	}
	return "authn: " + string(e.Reason) + ": " + e.Err.Error()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

func unauthorized(r Reason, err error) *Error {
	return &Error{Reason: r, Status: http.StatusUnauthorized, Err: err}
}

func forbidden(r Reason) *Error {
	return &Error{Reason: r, Status: http.StatusForbidden}
}

// AsError maps any error returned by an Authenticator or Policy to an *Error:
// an *Error anywhere in the chain is returned as is, ErrNoCredentials becomes
// Reason "missing" and anything else Reason "invalid", both with Status 401.
// It returns nil for a nil error.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, ErrNoCredentials) {
		return unauthorized(ReasonMissing, err)
	}
	return unauthorized(ReasonInvalid, err)
}

// Chain returns an Authenticator that asks each of as in turn. The first that
// does not return ErrNoCredentials decides, whether it accepts or refuses:
// a bad token is not retried as an API key. When all return
// ErrNoCredentials, so does the chain. The result is safe for concurrent use
// when every element is.
func Chain(as ...Authenticator) Authenticator {
	return chain(slices.Clone(as))
}

type chain []Authenticator

func (c chain) Authenticate(r *http.Request) (*Principal, error) {
	for _, a := range c {
		p, err := a.Authenticate(r)
		if errors.Is(err, ErrNoCredentials) {
			continue
		}
		return p, err
	}
	return nil, ErrNoCredentials
}

type principalKey struct{}

// WithPrincipal returns a copy of ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal stored by [WithPrincipal] or
// [Middleware], if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
