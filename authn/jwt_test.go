package authn

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testIssuer = "https://issuer.test"

// mixedSettings accepts HS256, RS256, ES256 and EdDSA for testIssuer and
// audience "api".
func mixedSettings(clock *fakeClock) JWTSettings {
	return JWTSettings{
		Secret: testSecret,
		PublicKeys: map[string]crypto.PublicKey{
			"rsa1": pub(rsaKey()),
			"ec1":  pub(ecKey()),
			"ed1":  pub(edKey()),
		},
		Algorithms: []string{"HS256", "RS256", "ES256", "EdDSA"},
		Issuers:    []IssuerSettings{{Issuer: testIssuer}},
		Audience:   []string{"api"},
		Now:        clock.Now,
	}
}

func TestJWTMiddlewareAttacks(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	now := clock.Now()
	mixed := newGateway(t, mustJWT(t, mixedSettings(clock)), Policy{})
	rsaOnly := newGateway(t, mustJWT(t, JWTSettings{
		PublicKeys: map[string]crypto.PublicKey{"": pub(rsaKey())},
		Now:        clock.Now,
	}), Policy{})

	c := claimsAt(now)
	pemBytes := rsaPublicPEM(t)
	valid := sign(t, jwt.SigningMethodHS256, testSecret, "", c)
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", c)
	parts := strings.Split(valid, ".")
	evilPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"user-1","iss":"` + testIssuer +
		`","aud":"api","exp":` + big.NewInt(now.Add(time.Hour).Unix()).String() + `,"roles":["admin"]}`))
	tampered := parts[0] + "." + evilPayload + "." + parts[2]
	huge := sign(t, jwt.SigningMethodHS256, testSecret, "", with(c, "pad", strings.Repeat("x", 9000)))

	tests := []struct {
		name       string
		gw         *gateway
		path       string
		header     []string
		wantStatus int
		wantReason Reason
	}{
		{name: "valid HS256", header: bearer(valid), wantStatus: 200},
		{name: "valid RS256", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa1", c)), wantStatus: 200},
		{name: "valid ES256", header: bearer(sign(t, jwt.SigningMethodES256, ecKey(), "ec1", c)), wantStatus: 200},
		{name: "valid EdDSA", header: bearer(sign(t, jwt.SigningMethodEdDSA, edKey(), "ed1", c)), wantStatus: 200},
		{name: "valid RS256 without kid on single-key config", gw: rsaOnly,
			header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey(), "", c)), wantStatus: 200},
		{name: "lowercase bearer scheme", header: []string{"Authorization", "bearer " + valid}, wantStatus: 200},
		{name: "leeway: expired 20s ago", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "exp", now.Add(-20*time.Second).Unix()))), wantStatus: 200},
		{name: "leeway: nbf in 20s", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "nbf", now.Add(20*time.Second).Unix()))), wantStatus: 200},
		{name: "leeway: iat in 20s", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "iat", now.Add(20*time.Second).Unix()))), wantStatus: 200},

		{name: "alg none", header: bearer(none), wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "alg none, uppercase", header: bearer(forgeHeader(t, none, `{"alg":"NONE","typ":"JWT"}`)),
			wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "HS256 signed with RSA public key PEM, kid of the RSA key",
			header: bearer(sign(t, jwt.SigningMethodHS256, pemBytes, "rsa1", c)), wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "HS256 signed with RSA public key PEM, no kid",
			header: bearer(sign(t, jwt.SigningMethodHS256, pemBytes, "", c)), wantStatus: 401, wantReason: ReasonBadSignature},
		{name: "HS256 signed with RSA public key PEM, RSA-only config", gw: rsaOnly,
			header: bearer(sign(t, jwt.SigningMethodHS256, pemBytes, "", c)), wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "RS256 with the kid of an EC key", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey(), "ec1", c)),
			wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "RS384 not in allow-list", header: bearer(sign(t, jwt.SigningMethodRS384, rsaKey(), "rsa1", c)),
			wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "unimplemented alg", header: bearer(forgeHeader(t, valid, `{"alg":"XX999","typ":"JWT"}`)),
			wantStatus: 401, wantReason: ReasonBadAlgorithm},
		{name: "tampered payload", header: bearer(tampered), wantStatus: 401, wantReason: ReasonBadSignature},
		{name: "signed with another secret", header: bearer(sign(t, jwt.SigningMethodHS256,
			[]byte("another-secret-another-secret-!!"), "", c)), wantStatus: 401, wantReason: ReasonBadSignature},
		{name: "expired beyond leeway", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "exp", now.Add(-31*time.Second).Unix()))), wantStatus: 401, wantReason: ReasonExpired},
		{name: "nbf beyond leeway", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "nbf", now.Add(2*time.Minute).Unix()))), wantStatus: 401, wantReason: ReasonNotYetValid},
		{name: "iat beyond leeway", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "iat", now.Add(2*time.Minute).Unix()))), wantStatus: 401, wantReason: ReasonNotYetValid},
		{name: "missing exp", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "", with(c, "exp", nil))),
			wantStatus: 401, wantReason: ReasonMissingClaim},
		{name: "exp of wrong type", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "", with(c, "exp", "tomorrow"))),
			wantStatus: 401, wantReason: ReasonMalformed},
		{name: "wrong iss", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "", with(c, "iss", "https://evil.test"))),
			wantStatus: 401, wantReason: ReasonBadIssuer},
		{name: "no iss", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "", with(c, "iss", nil))),
			wantStatus: 401, wantReason: ReasonBadIssuer},
		{name: "wrong aud", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "", with(c, "aud", "other"))),
			wantStatus: 401, wantReason: ReasonBadAudience},
		{name: "unknown kid", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey(), "nope", c)),
			wantStatus: 401, wantReason: ReasonUnknownKey},
		{name: "malformed: kid is a number", header: bearer(forgeHeader(t, sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa1", c),
			`{"alg":"RS256","kid":7}`)), wantStatus: 401, wantReason: ReasonMalformed},
		{name: "oversized token", header: bearer(huge), wantStatus: 401, wantReason: ReasonTooLarge},
		{name: "token only in query string", path: "/?access_token=" + valid, wantStatus: 401, wantReason: ReasonMissing},
		{name: "no credentials", wantStatus: 401, wantReason: ReasonMissing},
		{name: "basic scheme", header: []string{"Authorization", "Basic dXNlcjpwYXNz"}, wantStatus: 401, wantReason: ReasonMissing},
		{name: "malformed: empty bearer", header: []string{"Authorization", "Bearer "}, wantStatus: 401, wantReason: ReasonMalformed},
		{name: "malformed: two segments", header: bearer("abc.def"), wantStatus: 401, wantReason: ReasonMalformed},
		{name: "malformed: not base64", header: bearer("!!!.###.$$$"), wantStatus: 401, wantReason: ReasonMalformed},
		{name: "malformed: two Authorization headers", header: append(bearer(valid), bearer(valid)...),
			wantStatus: 401, wantReason: ReasonMalformed},
		{name: "malformed: roles claim of wrong type", header: bearer(sign(t, jwt.SigningMethodHS256, testSecret, "",
			with(c, "roles", 42))), wantStatus: 401, wantReason: ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := tt.gw
			if gw == nil {
				gw = mixed
			}
			path := tt.path
			if path == "" {
				path = "/"
			}
			before := gw.hits.Load()
			res := gw.do(t, path, tt.header...)
			if res.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (reason %q)", res.status, tt.wantStatus, res.reason)
			}
			if res.reason != tt.wantReason {
				t.Errorf("reason = %q, want %q", res.reason, tt.wantReason)
			}
			wantHits := before
			if tt.wantStatus == http.StatusOK {
				wantHits++
			}
			if got := gw.hits.Load(); got != wantHits {
				t.Errorf("backend hits = %d, want %d", got, wantHits)
			}
			if tt.wantStatus != 401 {
				return
			}
			wantChallenge := `Bearer error="invalid_token"`
			if tt.wantReason == ReasonMissing {
				wantChallenge = "Bearer"
			}
			if res.challenge != wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", res.challenge, wantChallenge)
			}
			if res.ctype != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", res.ctype)
			}
			if strings.Contains(res.body, string(tt.wantReason)) {
				t.Errorf("body %q reveals the reason %q", res.body, tt.wantReason)
			}
		})
	}
}

// forgeHeader replaces the JOSE header of tok, keeping payload and
// signature, so the signature no longer matches: used for headers jwt/v5
// will not sign.
func forgeHeader(t *testing.T, tok, header string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("forgeHeader: %d parts", len(parts))
	}
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + parts[1] + "." + parts[2]
}

func TestJWTPrincipal(t *testing.T) {
	clock := newClock()
	now := clock.Now()
	s := mixedSettings(clock)
	s.RolesClaim = "realm_access.roles"
	s.PermissionsClaim = "scope"
	s.TenantClaim = "org"
	j := mustJWT(t, s)
	tok := sign(t, jwt.SigningMethodES256, ecKey(), "ec1", with(claimsAt(now),
		"realm_access", map[string]any{"roles": []string{"admin", "ops"}},
		"scope", "orders:read orders:write",
		"org", "acme"))

	var got *Principal
	h := Middleware(j, Policy{Roles: []string{"admin"}, Permissions: []string{"orders:write"}}, nil)(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, _ = FromContext(r.Context())
		}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request(bearer(tok)...))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	want := &Principal{
		Subject: "user-1", Roles: []string{"admin", "ops"}, Permissions: []string{"orders:read", "orders:write"},
		Tenant: "acme", Method: MethodJWT, Issuer: testIssuer, ExpiresAt: now.Add(time.Hour),
	}
	if got == nil || got.Subject != want.Subject || !slices.Equal(got.Roles, want.Roles) ||
		!slices.Equal(got.Permissions, want.Permissions) || got.Tenant != want.Tenant ||
		got.Method != want.Method || got.Issuer != want.Issuer || !got.ExpiresAt.Equal(want.ExpiresAt) || got.KeyName != "" {
		t.Errorf("principal = %+v, want %+v", got, want)
	}
}

func TestJWTMultiIssuer(t *testing.T) {
	clock := newClock()
	now := clock.Now()
	j := mustJWT(t, JWTSettings{
		Secret:     testSecret,
		PublicKeys: map[string]crypto.PublicKey{"k": pub(rsaKey())},
		Issuers: []IssuerSettings{
			{Issuer: "https://a.test", Algorithms: []string{"HS256"}},
			{Issuer: "https://b.test", Algorithms: []string{"RS256"}, Audience: []string{"b-api"}},
		},
		Audience: []string{"api"},
		Now:      clock.Now,
	})
	a := with(claimsAt(now), "iss", "https://a.test")
	b := with(claimsAt(now), "iss", "https://b.test", "aud", "b-api")
	tests := []struct {
		name string
		tok  string
		want Reason
	}{
		{"a with HS256", sign(t, jwt.SigningMethodHS256, testSecret, "", a), ""},
		{"b with RS256", sign(t, jwt.SigningMethodRS256, rsaKey(), "k", b), ""},
		{"a with RS256", sign(t, jwt.SigningMethodRS256, rsaKey(), "k", a), ReasonBadAlgorithm},
		{"b with HS256", sign(t, jwt.SigningMethodHS256, testSecret, "", b), ReasonBadAlgorithm},
		{"b with a's audience", sign(t, jwt.SigningMethodRS256, rsaKey(), "k", with(b, "aud", "api")), ReasonBadAudience},
		{"unknown issuer", sign(t, jwt.SigningMethodHS256, testSecret, "", with(a, "iss", "https://c.test")), ReasonBadIssuer},
		{"iss not a string", sign(t, jwt.SigningMethodHS256, testSecret, "", with(a, "iss", 5)), ReasonMalformed},
		{"ISS does not pick the issuer", signRaw(t, jwt.SigningMethodHS256, testSecret,
			`{"iss":"https://a.test","ISS":"https://b.test","aud":"api","exp":`+big.NewInt(now.Add(time.Hour).Unix()).String()+`,"sub":"user-1"}`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := j.Authenticate(request(bearer(tt.tok)...))
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("Authenticate() reason = %q (err %v), want %q", got, err, tt.want)
			}
			if tt.want == "" && p.Subject != "user-1" {
				t.Errorf("Subject = %q, want user-1", p.Subject)
			}
		})
	}
}

func TestJWTNoCredentials(t *testing.T) {
	j := mustJWT(t, JWTSettings{Secret: testSecret})
	for _, h := range [][]string{nil, {"Authorization", "Basic Zm9vOmJhcg=="}, {"X-API-Key", "k"}} {
		if _, err := j.Authenticate(request(h...)); !errors.Is(err, ErrNoCredentials) {
			t.Errorf("Authenticate(%q) error = %v, want ErrNoCredentials", h, err)
		}
	}
}

func TestNewJWTSettings(t *testing.T) {
	small := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}
	tests := []struct {
		name    string
		s       JWTSettings
		wantErr error // nil: accepted
	}{
		{"secret only", JWTSettings{Secret: testSecret}, nil},
		{"key only", JWTSettings{PublicKeys: map[string]crypto.PublicKey{"": pub(edKey())}}, nil},
		{"JWKS https", JWTSettings{JWKSURL: "https://idp.test/jwks.json"}, nil},
		{"JWKS http loopback", JWTSettings{JWKSURL: "http://127.0.0.1:1/jwks"}, nil},
		{"nothing", JWTSettings{}, ErrInvalidSettings},
		{"alg none", JWTSettings{Secret: testSecret, Algorithms: []string{"none"}}, ErrInvalidSettings},
		{"alg None", JWTSettings{Secret: testSecret, Algorithms: []string{"None"}}, ErrInvalidSettings},
		{"unknown alg", JWTSettings{Secret: testSecret, Algorithms: []string{"HS257"}}, ErrInvalidSettings},
		{"HS256 without secret", JWTSettings{PublicKeys: map[string]crypto.PublicKey{"": pub(edKey())},
			Algorithms: []string{"HS256"}}, ErrInvalidSettings},
		{"short secret", JWTSettings{Secret: []byte("short")}, ErrInvalidSettings},
		{"HS512 with 32-byte secret", JWTSettings{Secret: testSecret, Algorithms: []string{"HS512"}}, ErrInvalidSettings},
		{"RS256 without keys", JWTSettings{Secret: testSecret, Algorithms: []string{"RS256"}}, ErrInvalidSettings},
		{"issuer alg list refused", JWTSettings{Secret: testSecret,
			Issuers: []IssuerSettings{{Issuer: "x", Algorithms: []string{"ES256"}}}}, ErrInvalidSettings},
		{"issuer without name", JWTSettings{Secret: testSecret, Issuers: []IssuerSettings{{}}}, ErrInvalidSettings},
		{"duplicate issuer", JWTSettings{Secret: testSecret,
			Issuers: []IssuerSettings{{Issuer: "x"}, {Issuer: "x"}}}, ErrInvalidSettings},
		{"negative leeway", JWTSettings{Secret: testSecret, Leeway: -time.Second}, ErrInvalidSettings},
		{"JWKS plain http", JWTSettings{JWKSURL: "http://idp.test/jwks"}, ErrInvalidSettings},
		{"JWKS no host", JWTSettings{JWKSURL: "https:///jwks"}, ErrInvalidSettings},
		{"small RSA key", JWTSettings{PublicKeys: map[string]crypto.PublicKey{"": small}}, ErrInvalidKey},
		{"private key", JWTSettings{PublicKeys: map[string]crypto.PublicKey{"": rsaKey()}}, ErrInvalidKey},
		{"unsupported key", JWTSettings{PublicKeys: map[string]crypto.PublicKey{"": "pem?"}}, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewJWT(tt.s)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("NewJWT() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewJWTDoesNotMutateSettings(t *testing.T) {
	s := JWTSettings{Secret: testSecret, PublicKeys: map[string]crypto.PublicKey{"k": pub(edKey())}}
	j := mustJWT(t, s)
	if s.Algorithms != nil || s.Leeway != 0 || s.MaxTokenBytes != 0 || s.RolesClaim != "" || s.CacheSize != 0 {
		t.Errorf("settings mutated: %+v", s)
	}
	// The JWT keeps its own copies.
	s.Secret[0] ^= 0xff
	defer func() { s.Secret[0] ^= 0xff }()
	delete(s.PublicKeys, "k")
	tok := sign(t, jwt.SigningMethodEdDSA, edKey(), "k", claimsAt(time.Now()))
	if _, err := j.Authenticate(request(bearer(tok)...)); err != nil {
		t.Errorf("Authenticate() after caller changed settings: %v", err)
	}
}

func TestJWTMaxTokenBytes(t *testing.T) {
	clock := newClock()
	j := mustJWT(t, JWTSettings{Secret: testSecret, MaxTokenBytes: 100, Now: clock.Now})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now()))
	if len(tok) <= 100 {
		t.Fatalf("test token of %d bytes is too short", len(tok))
	}
	if _, err := j.Authenticate(request(bearer(tok)...)); reasonOf(err) != ReasonTooLarge {
		t.Errorf("Authenticate() error = %v, want reason too_large", err)
	}
}

func TestJWTRunWithoutJWKS(t *testing.T) {
	j := mustJWT(t, JWTSettings{Secret: testSecret})
	if err := j.Run(context.Background()); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// signRaw signs a payload given as raw JSON, for key orders and duplicates
// that a Go map cannot express.
func signRaw(t *testing.T, m jwt.SigningMethod, key any, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"`+m.Alg()+`","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := m.Sign(signing, key)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// FuzzJWTAuthenticate feeds arbitrary Authorization headers: Authenticate
// must not panic, must classify every refusal, and may only accept the one
// validly signed token of the corpus.
func FuzzJWTAuthenticate(f *testing.F) {
	clock := newClock()
	j := mustJWT(f, JWTSettings{
		Secret:     testSecret,
		PublicKeys: map[string]crypto.PublicKey{"rsa1": pub(rsaKey())},
		Issuers:    []IssuerSettings{{Issuer: testIssuer}},
		Now:        clock.Now,
	})
	valid := sign(f, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now()))
	for _, seed := range []string{
		"Bearer " + valid, "bearer  " + valid + " ", "Bearer", "Basic x", "Bearer a.b.c",
		"Bearer " + strings.ToUpper(valid), "Bearer ..", "Bearer e30.e30.", "Bearer eyJhbGciOiJub25lIn0.e30.",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Authorization"] = []string{header}
		p, err := j.Authenticate(r)
		if err == nil {
			if tok, _ := bearerToken(r.Header, 8192); tok != valid || p == nil {
				t.Fatalf("Authenticate(%q) accepted a token that was never signed", header)
			}
			return
		}
		if !errors.Is(err, ErrNoCredentials) {
			if e := AsError(err); e.Status != 401 || e.Reason == ReasonInvalid || e.Reason == "" {
				t.Fatalf("Authenticate(%q) error = %v (%+v), want a classified 401", header, err, e)
			}
		}
	})
}
