package config_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/config"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// TestDefaultRoutesReachTheirServices sends a request down each of the
// default configuration's 14 routes to real backends on loopback and checks
// that the right service received the full original path.
func TestDefaultRoutesReachTheirServices(t *testing.T) {
	secret := "e2e-secret-0123456789abcdef0123456789"
	c, err := config.Parse("default.yaml", config.Default(), lookup(map[string]string{"JWT_SECRET": secret}))
	if err != nil {
		t.Fatal(err)
	}
	token, err := authn.MintHS256([]byte(secret), authn.MintClaims{Subject: "u1", Roles: []string{"admin"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range c.ServiceNames() {
		b := gatewaytest.NewBackend(t, name, nil)
		svc := c.Services[name]
		svc.Instances = []config.Instance{{URL: b.URL, Weight: 1}}
		c.Services[name] = svc
	}
	gc, err := c.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()

	want := map[string]string{
		"/api/v1/auth/login":        "auth_service",
		"/api/v1/users":             "user_service",
		"/api/v1/users/me":          "user_service",
		"/api/v1/workspaces":        "workspace_service",
		"/api/v1/workspaces/ws1":    "workspace_service",
		"/api/v1/bases/b1/tables":   "base_service",
		"/api/v1/tables/t1":         "table_service",
		"/api/v1/views/v1":          "view_service",
		"/api/v1/records/r1":        "record_service",
		"/api/v1/fields/f1":         "field_service",
		"/api/v1/formulas/evaluate": "formula_service",
		"/api/v1/llm/chat":          "llm_orchestrator",
		"/api/v1/files/upload":      "file_processor",
		"/api/v1/airtable/bases":    "airtable_gateway",
		"/api/v1/analytics/events":  "analytics_service",
		"/api/v1/workflows/w1/run":  "workflow_engine",
	}
	seen := map[string]bool{}
	for path, service := range want {
		req, _ := http.NewRequest("GET", srv.URL+path+"?page=2", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e gatewaytest.Echo
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 200 || e.Service != service || e.Path != path || e.Query != "page=2" {
			t.Errorf("GET %s: status %d reached %q at %q?%s; want %q at the same path", path, resp.StatusCode, e.Service, e.Path, e.Query, service)
		}
		seen[service] = true
	}
	if len(seen) != 14 {
		t.Errorf("reached %d services, want all 14", len(seen))
	}
	for _, path := range []string{"/api/v1/usersX", "/api/v1", "/api/v2/users", "/"} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}
