package gateway_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

const testSecret = "gateway-auth-test-secret-0123456789abcdef"

type authFixture struct {
	base    string
	backend *gatewaytest.Backend
	rsaKey  *rsa.PrivateKey
	rsaPEM  []byte
}

// newAuthGateway serves the default-config shaped routes behind JWT (HS256
// and RS256 by kid) and API-key authentication.
func newAuthGateway(t *testing.T, extra ...func(*gateway.Config)) authFixture {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwtAuth, err := authn.NewJWT(authn.JWTSettings{
		Secret:        []byte(testSecret),
		PublicKeys:    map[string]crypto.PublicKey{"rsa-1": &rk.PublicKey},
		Algorithms:    []string{"HS256", "RS256"},
		Issuers:       []authn.IssuerSettings{{Issuer: "https://id.example.com", Algorithms: []string{"HS256", "RS256"}, Audience: []string{"api"}}},
		MaxTokenBytes: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := authn.NewAPIKeys([]authn.APIKey{{Name: "billing", KeySHA256: authn.HashAPIKey("svc-key-123"), Roles: []string{"service"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	b := gatewaytest.NewBackend(t, "svc", nil)
	cfg := gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes: []gateway.Route{
			{Name: "auth", Prefix: "/api/v1/auth", Service: "svc", Public: true},
			{Name: "users-list", Path: "/api/v1/users", Methods: []string{"GET"}, Service: "svc", Roles: []string{"admin"}},
			{Name: "users", Prefix: "/api/v1/users", Service: "svc"},
			{Name: "reports", Prefix: "/api/v1/reports", Service: "svc", Permissions: []string{"reports:read", "reports:export"}},
			{Name: "tenants", Prefix: "/api/v1/tenants", Service: "svc", TenantSegment: 4},
			{Name: "workspaces", Prefix: "/api/v1/workspaces", Service: "svc"},
		},
		Auth:   authn.Chain(jwtAuth, keys),
		Logger: discardLogger,
	}
	for _, f := range extra {
		f(&cfg)
	}
	_, base := newGateway(t, cfg)
	return authFixture{base: base, backend: b, rsaKey: rk, rsaPEM: pemBytes}
}

func mint(t *testing.T, c authn.MintClaims) string {
	t.Helper()
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	if c.Issuer == "" {
		c.Issuer = "https://id.example.com"
	}
	if c.Audience == nil {
		c.Audience = []string{"api"}
	}
	tok, err := authn.MintHS256([]byte(testSecret), c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signWith(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func call(t *testing.T, method, url string, hdr map[string]string) (int, http.Header, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e gatewaytest.Echo
	body, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") == "application/json" {
		jsonUnmarshal(body, &e)
	}
	return resp.StatusCode, resp.Header, http.Header(e.Headers)
}

func TestJWTAttacksAreRejected(t *testing.T) {
	f := newAuthGateway(t)
	now := time.Now()
	valid := jwt.MapClaims{"sub": "u1", "iss": "https://id.example.com", "aud": "api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for a, b := range valid {
			c[a] = b
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	good := signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", valid)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","roles":["admin"],"iss":"https://id.example.com","aud":"api","exp":9999999999}`)) + "." + parts[2]
	noneTok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name  string
		hdr   map[string]string
		query string
	}{
		{"alg none", map[string]string{"Authorization": "Bearer " + noneTok}, ""},
		{"HS256 signed with the RSA public key", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, f.rsaPEM, "rsa-1", valid)}, ""},
		{"tampered payload", map[string]string{"Authorization": "Bearer " + tampered}, ""},
		{"expired", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("exp", now.Add(-time.Hour).Unix()))}, ""},
		{"nbf in the future", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("nbf", now.Add(time.Hour).Unix()))}, ""},
		{"missing exp", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("exp", nil))}, ""},
		{"wrong iss", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("iss", "https://evil.example.com"))}, ""},
		{"wrong aud", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("aud", "other"))}, ""},
		{"unknown kid", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodES256, otherKey, "nope", valid)}, ""},
		{"oversized token", map[string]string{"Authorization": "Bearer " + signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("pad", strings.Repeat("x", 5000)))}, ""},
		{"token in query string", nil, "?access_token=" + good},
		{"malformed header", map[string]string{"Authorization": "Bearer"}, ""},
		{"basic auth", map[string]string{"Authorization": "Basic dTE6cGFzcw=="}, ""},
		{"wrong API key", map[string]string{"X-API-Key": "svc-key-124"}, ""},
		{"no credentials", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.backend.Hits()
			status, h, _ := call(t, "GET", f.base+"/api/v1/workspaces/w1"+c.query, c.hdr)
			if status != 401 {
				t.Errorf("status = %d, want 401", status)
			}
			if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
			}
			if f.backend.Hits() != before {
				t.Errorf("the backend was reached")
			}
		})
	}
	t.Run("valid tokens pass", func(t *testing.T) {
		for name, tok := range map[string]string{
			"HS256": good,
			"RS256": signWith(t, jwt.SigningMethodRS256, f.rsaKey, "rsa-1", valid),
		} {
			if status, _, _ := call(t, "GET", f.base+"/api/v1/workspaces/w1", map[string]string{"Authorization": "Bearer " + tok}); status != 200 {
				t.Errorf("%s: status %d, want 200", name, status)
			}
		}
		if status, _, _ := call(t, "GET", f.base+"/api/v1/workspaces/w1", map[string]string{"X-API-Key": "svc-key-123"}); status != 200 {
			t.Errorf("API key: status %d", status)
		}
	})
	t.Run("invalid_token challenge", func(t *testing.T) {
		_, h, _ := call(t, "GET", f.base+"/api/v1/workspaces", map[string]string{"Authorization": "Bearer " + tampered})
		if h.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
		}
	})
}

func TestRBACMatrix(t *testing.T) {
	f := newAuthGateway(t)
	admin := mint(t, authn.MintClaims{Subject: "a", Roles: []string{"admin"}})
	user := mint(t, authn.MintClaims{Subject: "u", Roles: []string{"user"}})
	analyst := mint(t, authn.MintClaims{Subject: "r", Permissions: []string{"reports:read", "reports:export"}})
	reader := mint(t, authn.MintClaims{Subject: "r2", Permissions: []string{"reports:read"}})
	cases := []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/users", admin, 200},
		{"GET", "/api/v1/users", user, 403},
		{"GET", "/api/v1/users/", user, 403}, // trailing slash does not dodge the exact route
		{"GET", "/api/v1/users", "", 401},
		{"POST", "/api/v1/users", user, 200}, // only the GET list is admin-only
		{"GET", "/api/v1/users/me", user, 200},
		{"GET", "/api/v1/users/me", "", 401},
		{"GET", "/api/v1/users/me/../../users", user, 403},
		{"GET", "/api/v1/auth/login", "", 200},
		{"GET", "/api/v1/auth/../users", "", 401},
		{"GET", "/api/v1/reports/q1", analyst, 200},
		{"GET", "/api/v1/reports/q1", reader, 403},
		{"GET", "/api/v1/reports/q1", admin, 403},
	}
	for _, c := range cases {
		hdr := map[string]string{}
		if c.token != "" {
			hdr["Authorization"] = "Bearer " + c.token
		}
		req, _ := http.NewRequest(c.method, f.base+c.path, nil)
		req.URL.Opaque = c.path
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s (token %t) = %d, want %d", c.method, c.path, c.token != "", resp.StatusCode, c.want)
		}
	}
}

func TestIdentityHeadersCannotBeSpoofed(t *testing.T) {
	f := newAuthGateway(t)
	tok := mint(t, authn.MintClaims{Subject: "real-user", Roles: []string{"user", "beta"}, Tenant: "t1"})
	spoof := map[string]string{
		"Authorization": "Bearer " + tok,
		"X-User-ID":     "admin",
		"X-User-Roles":  "admin",
		"X-Auth-Method": "api_key",
		"X-Auth-Admin":  "true",
		"X_User_Id":     "admin",
		"x-user-roles":  "superuser",
	}
	status, _, seen := call(t, "GET", f.base+"/api/v1/workspaces", spoof)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	want := map[string]string{"X-User-Id": "real-user", "X-User-Roles": "user,beta", "X-Tenant-Id": "t1", "X-Auth-Method": "jwt", "X-Auth-Subject": "real-user"}
	for k, v := range want {
		if got := seen.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("backend saw %s = %q, want [%q]", k, got, v)
		}
	}
	for k := range seen {
		if strings.EqualFold(k, "X-Auth-Admin") || strings.Contains(k, "_") {
			t.Errorf("backend saw client-made identity header %s: %q", k, seen[k])
		}
	}
	// On a public route, client identity headers are stripped too.
	_, _, seen = call(t, "GET", f.base+"/api/v1/auth/login", map[string]string{"X-User-ID": "admin", "X-Tenant-ID": "t9"})
	if seen.Get("X-User-Id") != "" || seen.Get("X-Tenant-Id") != "" {
		t.Errorf("public route forwarded client identity headers: %v", seen)
	}
}

func TestTenantIsolation(t *testing.T) {
	f := newAuthGateway(t)
	t1 := mint(t, authn.MintClaims{Subject: "u", Tenant: "t1"})
	cases := []struct {
		path string
		hdr  map[string]string
		want int
	}{
		{"/api/v1/tenants/t1/bases", nil, 200},
		{"/api/v1/tenants/t2/bases", nil, 403},
		{"/api/v1/tenants", nil, 403},
		{"/api/v1/workspaces", map[string]string{"X-Tenant-ID": "t1"}, 200},
		{"/api/v1/workspaces", map[string]string{"X-Tenant-ID": "t2"}, 403},
		{"/api/v1/workspaces", map[string]string{"X_Tenant_Id": "t2"}, 403},
	}
	for _, c := range cases {
		hdr := map[string]string{"Authorization": "Bearer " + t1}
		for k, v := range c.hdr {
			hdr[k] = v
		}
		before := f.backend.Hits()
		status, _, _ := call(t, "GET", f.base+c.path, hdr)
		if status != c.want {
			t.Errorf("GET %s %v = %d, want %d", c.path, c.hdr, status, c.want)
		}
		if c.want == 403 && f.backend.Hits() != before {
			t.Errorf("GET %s: refused request reached the backend", c.path)
		}
	}
	// A tenant-less service key acts across tenants.
	if status, _, _ := call(t, "GET", f.base+"/api/v1/tenants/t7/bases", map[string]string{"X-API-Key": "svc-key-123"}); status != 200 {
		t.Errorf("service key across tenants = %d, want 200", status)
	}
}

func TestCORS(t *testing.T) {
	f := newAuthGateway(t, func(c *gateway.Config) {
		c.CORS = gateway.CORSSettings{
			AllowedOrigins:   []string{"https://app.example.com", "https://*.example.org"},
			AllowCredentials: true,
			ExposedHeaders:   []string{"X-Request-ID"},
			MaxAge:           300,
		}
	})
	preflight := func(origin, method, headers string) (int, http.Header) {
		req, _ := http.NewRequest("OPTIONS", f.base+"/api/v1/workspaces", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", method)
		if headers != "" {
			req.Header.Set("Access-Control-Request-Headers", headers)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	hits := f.backend.Hits()
	for _, origin := range []string{"https://app.example.com", "https://eu.example.org"} {
		status, h := preflight(origin, "PUT", "Authorization, Content-Type")
		if status != 204 || h.Get("Access-Control-Allow-Origin") != origin || h.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "PUT") || h.Get("Access-Control-Max-Age") != "300" || !strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("preflight from %s: %d %v", origin, status, h)
		}
	}
	for _, c := range []struct{ origin, method, headers string }{
		{"https://evil.example.com", "GET", ""},
		{"https://example.org", "GET", ""}, // the wildcard needs a subdomain
		{"https://app.example.com.evil.com", "GET", ""},
		{"http://app.example.com", "GET", ""}, // scheme matters
		{"https://app.example.com", "TRACE", ""},
		{"https://app.example.com", "GET", "X-Secret-Header"},
	} {
		status, h := preflight(c.origin, c.method, c.headers)
		if status != 204 || h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("refused preflight %+v got CORS headers: %d %v", c, status, h)
		}
	}
	if f.backend.Hits() != hits {
		t.Error("preflights reached the backend")
	}
	tok := mint(t, authn.MintClaims{Subject: "u"})
	_, h, _ := call(t, "GET", f.base+"/api/v1/workspaces", map[string]string{"Authorization": "Bearer " + tok, "Origin": "https://app.example.com"})
	if h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || h.Get("Access-Control-Expose-Headers") != "X-Request-ID" || h.Get("Vary") != "Origin" {
		t.Errorf("simple request CORS headers: %v", h)
	}
	_, h, _ = call(t, "GET", f.base+"/api/v1/workspaces", map[string]string{"Authorization": "Bearer " + tok, "Origin": "https://evil.example.com"})
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("disallowed origin got %q", h.Get("Access-Control-Allow-Origin"))
	}
	_, err := gateway.New(gateway.Config{CORS: gateway.CORSSettings{AllowedOrigins: []string{"*"}, AllowCredentials: true}})
	if err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("* with credentials: %v, want an error", err)
	}
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "gunicorn/20.1")
		w.Header().Set("X-Powered-By", "FastAPI")
		w.Header().Set("X-Frame-Options", "ALLOWALL")
		w.Header().Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT") // a backend with a wrong clock
		io.WriteString(w, "ok")
	}))
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/api", Service: "svc"}},
	})
	for _, path := range []string{"/api/x", "/nope", "/health"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if h.Values("X-Frame-Options")[0] != "DENY" || len(h.Values("X-Frame-Options")) != 1 || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: security headers %v", path, h)
		}
		if h.Get("Server") != "" || h.Get("X-Powered-By") != "" {
			t.Errorf("%s: backend software leaked: Server=%q X-Powered-By=%q", path, h.Get("Server"), h.Get("X-Powered-By"))
		}
		// The gateway dates its responses itself, as nginx does.
		if d, err := http.ParseTime(h.Get("Date")); err != nil || len(h.Values("Date")) != 1 || time.Since(d).Abs() > time.Minute {
			t.Errorf("%s: Date %q, want one value from the gateway's clock", path, h.Values("Date"))
		}
		if h.Get("Strict-Transport-Security") != "" {
			t.Errorf("%s: HSTS over plain HTTP", path)
		}
	}
	resp, _ := http.Get(base + "/nope")
	resp.Body.Close()
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("gateway-made response without Content-Security-Policy")
	}
}
