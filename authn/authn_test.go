package authn

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestChain(t *testing.T) {
	clock := newClock()
	j := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now})
	c := Chain(j, testAPIKeys(t))
	good := sign(t, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now()))
	bad := sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-!!"), "", claimsAt(clock.Now()))
	tests := []struct {
		name       string
		header     []string
		wantMethod string
		wantErr    error
		want       Reason
	}{
		{name: "JWT", header: bearer(good), wantMethod: MethodJWT},
		{name: "API key", header: []string{"X-API-Key", "ci-secret-key"}, wantMethod: MethodAPIKey},
		{name: "both: JWT first", header: append(bearer(good), "X-API-Key", "ci-secret-key"), wantMethod: MethodJWT},
		{name: "bad JWT is not rescued by a good API key", header: append(bearer(bad), "X-API-Key", "ci-secret-key"), want: ReasonBadSignature},
		{name: "bad API key", header: []string{"X-API-Key", "wrong"}, want: ReasonBadAPIKey},
		{name: "nothing", wantErr: ErrNoCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.Authenticate(request(tt.header...))
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Authenticate() error = %v, want %v", err, tt.wantErr)
				}
			case tt.want != "":
				if reasonOf(err) != tt.want {
					t.Errorf("Authenticate() error = %v, want reason %q", err, tt.want)
				}
			case err != nil || p.Method != tt.wantMethod:
				t.Errorf("Authenticate() = %+v, %v; want method %q", p, err, tt.wantMethod)
			}
		})
	}
	if _, err := Chain().Authenticate(request()); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("empty Chain error = %v, want ErrNoCredentials", err)
	}
}

func TestChainMiddleware(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	j := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now})
	gw := newGateway(t, Chain(j, testAPIKeys(t)), Policy{})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now()))
	for _, h := range [][]string{bearer(tok), {"X-API-Key", "bot-secret-key"}} {
		if res := gw.do(t, "/", h...); res.status != 200 {
			t.Errorf("GET with %s = %d (%s), want 200", h[0], res.status, res.reason)
		}
	}
	if res := gw.do(t, "/"); res.status != 401 || res.reason != ReasonMissing {
		t.Errorf("GET without credentials = %d %q, want 401 missing", res.status, res.reason)
	}
	if got := gw.hits.Load(); got != 2 {
		t.Errorf("backend hits = %d, want 2", got)
	}
}

func TestPolicyAuthorize(t *testing.T) {
	alice := &Principal{Subject: "alice", Roles: []string{"editor", "viewer"}, Permissions: []string{"read", "write"}, Tenant: "acme"}
	bob := &Principal{Subject: "bob", Roles: []string{"viewer"}, Permissions: []string{"read"}, Tenant: "globex"}
	nobody := &Principal{Subject: "nobody"}
	policies := map[string]Policy{
		"public":               {Public: true},
		"any principal":        {},
		"editor or admin":      {Roles: []string{"admin", "editor"}},
		"read and write":       {Permissions: []string{"read", "write"}},
		"viewer + read":        {Roles: []string{"viewer"}, Permissions: []string{"read"}},
		"public ignores roles": {Public: true, Roles: []string{"admin"}},
		"tenant acme":          {Tenants: []string{"acme"}},
		"role before perm":     {Roles: []string{"admin"}, Permissions: []string{"delete"}},
	}
	tests := []struct {
		policy string
		p      *Principal
		want   Reason // "" allowed
	}{
		{"public", nil, ""},
		{"public", bob, ""},
		{"public ignores roles", nil, ""},
		{"any principal", nil, ReasonMissing},
		{"any principal", nobody, ""},
		{"editor or admin", alice, ""},
		{"editor or admin", bob, ReasonForbiddenRole},
		{"editor or admin", nobody, ReasonForbiddenRole},
		{"editor or admin", nil, ReasonMissing},
		{"read and write", alice, ""},
		{"read and write", bob, ReasonForbiddenPermission},
		{"read and write", nobody, ReasonForbiddenPermission},
		{"viewer + read", alice, ""},
		{"viewer + read", bob, ""},
		{"viewer + read", nobody, ReasonForbiddenRole},
		{"tenant acme", alice, ""},
		{"tenant acme", bob, ReasonForbiddenTenant},
		{"role before perm", bob, ReasonForbiddenRole},
	}
	for _, tt := range tests {
		name := "nil"
		if tt.p != nil {
			name = tt.p.Subject
		}
		t.Run(tt.policy+"/"+name, func(t *testing.T) {
			err := policies[tt.policy].Authorize(tt.p)
			if got := reasonOf(err); got != tt.want || (tt.want == "") != (err == nil) {
				t.Fatalf("Authorize() = %v, want reason %q", err, tt.want)
			}
			wantStatus := 403
			if tt.want == ReasonMissing {
				wantStatus = 401
			}
			if err != nil && AsError(err).Status != wantStatus {
				t.Errorf("Status = %d, want %d", AsError(err).Status, wantStatus)
			}
		})
	}
}

func TestMiddlewarePublicSkipsAuthentication(t *testing.T) {
	var calls int
	a := authFunc(func(*http.Request) (*Principal, error) { calls++; return nil, ErrNoCredentials })
	var reached bool
	h := Middleware(a, Policy{Public: true}, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		if _, ok := FromContext(r.Context()); ok {
			t.Error("FromContext() ok on a public route")
		}
	}))
	h.ServeHTTP(httptest.NewRecorder(), request())
	if !reached || calls != 0 {
		t.Errorf("reached = %v, Authenticate calls = %d; want true, 0", reached, calls)
	}
	// A public route needs no authenticator at all.
	Middleware(nil, Policy{Public: true}, nil)(http.NotFoundHandler())
}

func TestMiddlewarePanicsWithoutAuthenticator(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Middleware(nil, Policy{}) did not panic")
		}
	}()
	Middleware(nil, Policy{}, nil)
}

type authFunc func(*http.Request) (*Principal, error)

func (f authFunc) Authenticate(r *http.Request) (*Principal, error) { return f(r) }

func TestWriteError(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		wantStatus    int
		wantChallenge string
	}{
		{"missing", ErrNoCredentials, 401, "Bearer"},
		{"expired token", unauthorized(ReasonExpired, nil), 401, `Bearer error="invalid_token"`},
		{"bad API key", unauthorized(ReasonBadAPIKey, nil), 401, "Bearer"},
		{"forbidden", forbidden(ReasonForbiddenRole), 403, `Bearer error="insufficient_scope"`},
		{"foreign error", errors.New("ldap: connection refused to 10.0.0.7"), 401, "Bearer"},
		{"nil", nil, 401, "Bearer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, request(), tt.err)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", got)
			}
			var doc struct {
				Type, Title string
				Status      int
			}
			body, _ := io.ReadAll(rec.Body)
			if err := json.Unmarshal(body, &doc); err != nil || doc.Status != tt.wantStatus || doc.Title == "" {
				t.Errorf("body %s: %+v, %v; want a problem document with status %d", body, doc, err, tt.wantStatus)
			}
			if tt.err != nil && strings.Contains(string(body), "10.0.0.7") {
				t.Errorf("body %s leaks the error", body)
			}
		})
	}
}

func TestErrorAndAsError(t *testing.T) {
	cause := errors.New("cause")
	e := unauthorized(ReasonExpired, cause)
	if !errors.Is(e, cause) || e.Error() != "authn: expired: cause" {
		t.Errorf("Error() = %q, Is(cause) = %v", e.Error(), errors.Is(e, cause))
	}
	if got := forbidden(ReasonForbiddenTenant).Error(); got != "authn: forbidden_tenant" {
		t.Errorf("Error() = %q, want authn: forbidden_tenant", got)
	}
	wrapped := errors.Join(errors.New("ctx"), e)
	if AsError(wrapped) != e {
		t.Error("AsError(wrapped) did not find the *Error")
	}
	if m := AsError(ErrNoCredentials); m.Reason != ReasonMissing || m.Status != 401 || !errors.Is(m, ErrNoCredentials) {
		t.Errorf("AsError(ErrNoCredentials) = %+v", m)
	}
	if AsError(nil) != nil {
		t.Error("AsError(nil) != nil")
	}
}

func TestContext(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Error("FromContext(empty) ok")
	}
	if _, ok := FromContext(WithPrincipal(context.Background(), nil)); ok {
		t.Error("FromContext(nil principal) ok")
	}
	p := &Principal{Subject: "s"}
	if got, ok := FromContext(WithPrincipal(context.Background(), p)); !ok || got != p {
		t.Errorf("FromContext() = %p, %v; want %p, true", got, ok, p)
	}
}

func TestPrincipalHelpers(t *testing.T) {
	var none *Principal
	p := &Principal{Roles: []string{"a"}, Permissions: []string{"x", "y"}}
	checks := []struct {
		name      string
		got, want bool
	}{
		{"HasRole(a)", p.HasRole("a"), true},
		{"HasRole(b)", p.HasRole("b"), false},
		{"nil.HasRole", none.HasRole("a"), false},
		{"HasAnyRole(b, a)", p.HasAnyRole("b", "a"), true},
		{"HasAnyRole()", p.HasAnyRole(), false},
		{"HasPermission(x)", p.HasPermission("x"), true},
		{"HasAllPermissions(x, y)", p.HasAllPermissions("x", "y"), true},
		{"HasAllPermissions(x, z)", p.HasAllPermissions("x", "z"), false},
		{"HasAllPermissions()", p.HasAllPermissions(), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestMintHS256(t *testing.T) {
	iat := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tok, err := MintHS256(testSecret, MintClaims{
		Subject: "dev", Roles: []string{"admin"}, Permissions: []string{"p"}, Tenant: "t",
		Issuer: "iss", Audience: []string{"aud"}, TTL: time.Minute, IssuedAt: iat, KeyID: "kid1",
	})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	parsed, err := jwt.NewParser(jwt.WithTimeFunc(func() time.Time { return iat })).ParseWithClaims(tok, claims,
		func(*jwt.Token) (any, error) { return testSecret, nil })
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["kid"] != "kid1" || parsed.Method.Alg() != "HS256" {
		t.Errorf("header = %v", parsed.Header)
	}
	exp, _ := claims.GetExpirationTime()
	if claims["sub"] != "dev" || claims["tenant_id"] != "t" || claims["iss"] != "iss" || !exp.Equal(iat.Add(time.Minute)) {
		t.Errorf("claims = %v", claims)
	}
	if _, err := MintHS256([]byte("short"), MintClaims{}); !errors.Is(err, ErrInvalidSettings) {
		t.Errorf("MintHS256(short secret) error = %v, want ErrInvalidSettings", err)
	}
	if _, err := MintHS256(testSecret, MintClaims{TTL: -time.Second}); !errors.Is(err, ErrInvalidSettings) {
		t.Errorf("MintHS256(negative TTL) error = %v, want ErrInvalidSettings", err)
	}
}
