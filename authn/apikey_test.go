package authn

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func testAPIKeys(t testing.TB) *APIKeys {
	t.Helper()
	k, err := NewAPIKeys([]APIKey{
		{Name: "ci", KeySHA256: HashAPIKey("ci-secret-key"), Roles: []string{"deployer"}, Permissions: []string{"deploy"}, Tenant: "acme"},
		{Name: "ops", KeySHA256: strings.ToUpper(HashAPIKey("ops-secret-key")), Roles: []string{"admin"}},
		{Name: "bot", KeySHA256: HashAPIKey("bot-secret-key")},
	}, "")
	if err != nil {
		t.Fatalf("NewAPIKeys() error = %v", err)
	}
	return k
}

func TestAPIKeysAuthenticate(t *testing.T) {
	k := testAPIKeys(t)
	tests := []struct {
		name     string
		header   []string
		wantName string // "" when refused
		wantErr  error  // ErrNoCredentials or nil
		want     Reason
	}{
		{name: "first key", header: []string{"X-API-Key", "ci-secret-key"}, wantName: "ci"},
		{name: "uppercase hash in config", header: []string{"X-API-Key", "ops-secret-key"}, wantName: "ops"},
		{name: "last key", header: []string{"x-api-key", "bot-secret-key"}, wantName: "bot"},
		{name: "wrong key", header: []string{"X-API-Key", "ci-secret-kez"}, want: ReasonBadAPIKey},
		{name: "hash instead of key", header: []string{"X-API-Key", HashAPIKey("ci-secret-key")}, want: ReasonBadAPIKey},
		{name: "two headers", header: []string{"X-API-Key", "ci-secret-key", "X-API-Key", "ci-secret-key"}, want: ReasonBadAPIKey},
		{name: "too long", header: []string{"X-API-Key", strings.Repeat("k", maxAPIKeyBytes+1)}, want: ReasonTooLarge},
		{name: "missing", wantErr: ErrNoCredentials},
		{name: "empty", header: []string{"X-API-Key", ""}, wantErr: ErrNoCredentials},
		{name: "bearer is not an API key", header: []string{"Authorization", "Bearer ci-secret-key"}, wantErr: ErrNoCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := k.Authenticate(request(tt.header...))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Authenticate() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("Authenticate() reason = %q (err %v), want %q", got, err, tt.want)
			}
			if tt.want != "" {
				if p != nil {
					t.Errorf("Authenticate() principal = %+v, want nil", p)
				}
				if e := AsError(err); e.Status != 401 {
					t.Errorf("Status = %d, want 401", e.Status)
				}
				return
			}
			if p.KeyName != tt.wantName || p.Subject != tt.wantName || p.Method != MethodAPIKey {
				t.Errorf("principal = %+v, want KeyName and Subject %q, Method api_key", p, tt.wantName)
			}
		})
	}
	p, _ := k.Authenticate(request("X-API-Key", "ci-secret-key"))
	if !slices.Equal(p.Roles, []string{"deployer"}) || !slices.Equal(p.Permissions, []string{"deploy"}) || p.Tenant != "acme" {
		t.Errorf("principal = %+v, want roles [deployer], permissions [deploy], tenant acme", p)
	}
	if s := (&Error{Reason: ReasonBadAPIKey, Status: 401}).Error(); strings.Contains(s, "ci-secret") {
		t.Errorf("error %q leaks the key", s)
	}
}

func TestAPIKeysMiddleware(t *testing.T) {
	checkGoroutines(t)
	gw := newGateway(t, testAPIKeys(t), Policy{Roles: []string{"deployer"}})
	tests := []struct {
		name       string
		header     []string
		wantStatus int
		wantReason Reason
		wantHeader string
	}{
		{"right key", []string{"X-API-Key", "ci-secret-key"}, 200, "", ""},
		{"wrong key", []string{"X-API-Key", "nope"}, 401, ReasonBadAPIKey, "Bearer"},
		{"right key, wrong role", []string{"X-API-Key", "ops-secret-key"}, 403, ReasonForbiddenRole, `Bearer error="insufficient_scope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := gw.hits.Load()
			res := gw.do(t, "/", tt.header...)
			if res.status != tt.wantStatus || res.reason != tt.wantReason || res.challenge != tt.wantHeader {
				t.Errorf("GET = %d %q %q, want %d %q %q", res.status, res.reason, res.challenge, tt.wantStatus, tt.wantReason, tt.wantHeader)
			}
			wantHits := before
			if tt.wantStatus == 200 {
				wantHits++
			}
			if got := gw.hits.Load(); got != wantHits {
				t.Errorf("backend hits = %d, want %d", got, wantHits)
			}
		})
	}
}

func TestNewAPIKeysValidation(t *testing.T) {
	h := HashAPIKey("k")
	tests := []struct {
		name string
		keys []APIKey
		ok   bool
	}{
		{"valid", []APIKey{{Name: "a", KeySHA256: h}}, true},
		{"hash with spaces around", []APIKey{{Name: "a", KeySHA256: " " + h + "\n"}}, true},
		{"no keys", nil, false},
		{"no name", []APIKey{{KeySHA256: h}}, false},
		{"duplicate name", []APIKey{{Name: "a", KeySHA256: h}, {Name: "a", KeySHA256: HashAPIKey("j")}}, false},
		{"duplicate hash", []APIKey{{Name: "a", KeySHA256: h}, {Name: "b", KeySHA256: strings.ToUpper(h)}}, false},
		{"not hex", []APIKey{{Name: "a", KeySHA256: strings.Repeat("z", 64)}}, false},
		{"too short", []APIKey{{Name: "a", KeySHA256: h[:62]}}, false},
		{"plain key instead of hash", []APIKey{{Name: "a", KeySHA256: "my-secret"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewAPIKeys(tt.keys, "")
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidSettings)) {
				t.Errorf("NewAPIKeys() error = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), h) {
				t.Errorf("error %q repeats the configured hash", err)
			}
		})
	}
}

func TestAPIKeysCustomHeader(t *testing.T) {
	k, err := NewAPIKeys([]APIKey{{Name: "a", KeySHA256: HashAPIKey("secret")}}, "x-gateway-token")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k.Authenticate(request("X-Gateway-Token", "secret")); err != nil || p.KeyName != "a" {
		t.Errorf("Authenticate() = %+v, %v; want key a", p, err)
	}
	if _, err := k.Authenticate(request("X-API-Key", "secret")); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("Authenticate(default header) error = %v, want ErrNoCredentials", err)
	}
}
