package config_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/config"
)

func TestInvalidConfigs(t *testing.T) {
	files, err := filepath.Glob("../../testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid configs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			_, err = config.Parse(f, data, nil)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse() error = %v, want *config.Error", err)
			}
			if got, w := err.Error(), strings.TrimSpace(string(want)); got != w {
				t.Errorf("Parse() problems:\n%s\nwant:\n%s", got, w)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c, err := config.Parse("default.yaml", config.Default(), nil)
	if err != nil {
		t.Fatalf("embedded default: %v", err)
	}
	if len(c.Services) != 14 {
		t.Errorf("services = %d, want 14", len(c.Services))
	}
	if c.Server.Port != 8080 || c.Admin.Port != 9090 || c.Server.BodyLimit != 4<<20 || c.Server.Concurrency != 262144 {
		t.Errorf("server defaults = %+v, admin %+v", c.Server, c.Admin)
	}
	// The documented copy in testdata must not drift from the embedded one.
	doc, err := os.ReadFile("../../testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(doc) != string(config.Default()) {
		t.Error("testdata/config.yaml differs from gateway/config/default.yaml; keep them identical")
	}
}

func TestQuickstartConfigLoadsUnchanged(t *testing.T) {
	data, err := os.ReadFile("../../testdata/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// As the spec says: the secret comes from JWT_SECRET in production.
	env := map[string]string{"JWT_SECRET": strings.Repeat("k", 40)}
	c, err := config.Parse("quickstart.yaml", data, lookup(env))
	if err != nil {
		t.Fatalf("quickstart: %v", err)
	}
	svc := c.Services["auth_service"]
	if svc.Timeout.D().String() != "30s" || *svc.RetryCount != 3 || svc.Instances[0].URL != "http://auth-service:8081" {
		t.Errorf("auth_service = %+v", svc)
	}
	if !c.Security.RateLimit.Enabled || c.Security.RateLimit.GlobalLimit != 10000 || c.Security.RateLimit.PerIPLimit != 100 {
		t.Errorf("rate_limit = %+v", c.Security.RateLimit)
	}
	if c.Auth.JWTExpiry.D().String() != "24h0m0s" {
		t.Errorf("jwt_expiry = %v", c.Auth.JWTExpiry.D())
	}
	// Without the override, production refuses the placeholder secret.
	_, err = config.Parse("quickstart.yaml", data, nil)
	if err == nil || !strings.Contains(err.Error(), "quickstart.yaml:8: auth.jwt_secret: is 25 bytes; production needs at least 32") {
		t.Errorf("quickstart without JWT_SECRET: %v", err)
	}
}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestEnvironmentOverrides(t *testing.T) {
	env := map[string]string{
		"JWT_SECRET":  "s3cret-from-env-0123456789abcdef0123",
		"REDIS_URL":   "redis://127.0.0.1:6379/0",
		"ENVIRONMENT": "staging",
		"LOG_LEVEL":   "debug",
		"PORT":        "9999",
	}
	c, err := config.Parse("default.yaml", config.Default(), lookup(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.JWTSecret != env["JWT_SECRET"] || c.Security.RateLimit.RedisURL != env["REDIS_URL"] ||
		c.Server.Environment != "staging" || c.Log.Level != "debug" || c.Server.Port != 9999 {
		t.Errorf("overrides not applied: server %+v log %+v", c.Server, c.Log)
	}
	_, err = config.Parse("default.yaml", config.Default(), lookup(map[string]string{"PORT": "http", "ENVIRONMENT": "prod"}))
	want := "default.yaml:10: server.environment: \"prod\" is not one of development, test, staging, production"
	if err == nil || !strings.Contains(err.Error(), "environment: PORT (server.port): \"http\" is not a port number") {
		t.Errorf("bad PORT: %v", err)
	}
	_ = want
	_, err = config.Parse("default.yaml", config.Default(), lookup(map[string]string{"ENVIRONMENT": "prod"}))
	if err == nil || !strings.Contains(err.Error(), `environment: ENVIRONMENT (server.environment): "prod" is not one of`) {
		t.Errorf("bad ENVIRONMENT: %v", err)
	}
}

func TestGatewayFromConfig(t *testing.T) {
	c, err := config.Parse("default.yaml", config.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gc, err := c.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.Services) != 14 || len(gc.Routes) != 15 {
		t.Errorf("gateway config: %d services, %d routes", len(gc.Services), len(gc.Routes))
	}
	if gc.BodyLimit != 4<<20 || gc.Transport.MaxIdleConns != 1000 || gc.Transport.MaxIdleConnsPerHost != 100 || gc.Transport.DisableDirect {
		t.Errorf("limits: body %d transport %+v", gc.BodyLimit, gc.Transport)
	}
}

func TestMarshalRedactsAndRoundTrips(t *testing.T) {
	env := map[string]string{"JWT_SECRET": "do-not-print-me-0123456789abcdef0123"}
	c, err := config.Parse("default.yaml", config.Default(), lookup(env))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "do-not-print-me") {
		t.Error("effective config prints the JWT secret")
	}
	// The effective config is itself a valid config (secrets come from
	// the environment again).
	if _, err := config.Parse("effective.yaml", b, lookup(env)); err != nil {
		t.Errorf("effective config does not load: %v", err)
	}
}

var quiet = slog.New(slog.DiscardHandler)

// TestFullExampleLoads keeps testdata/full.yaml — the example that uses
// every key — valid, buildable into a gateway, and a round trip of -print.
func TestFullExampleLoads(t *testing.T) {
	data, err := os.ReadFile("../../testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("full.yaml", data, nil)
	if err != nil {
		t.Fatalf("full.yaml: %v", err)
	}
	gc, err := c.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	gc.Logger = quiet
	if gc.Transport.DisableDirect {
		t.Error("server.transport.direct: true turned the direct path off")
	}
	off, err := config.Parse("off.yaml", []byte("server: {transport: {direct: false}}\nservices: {a: {url: \"http://127.0.0.1:1\"}}\nroutes: [{prefix: /a, service: a}]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if goff, err := off.Gateway(); err != nil || !goff.Transport.DisableDirect {
		t.Errorf("server.transport.direct: false: DisableDirect %v, %v", goff.Transport.DisableDirect, err)
	}
	for _, s := range gc.Services {
		if s.Name == "record_service" && (s.MaxConnsPerInstance != 64 || s.QueueTimeout != 2*time.Second) {
			t.Errorf("record_service: max_conns_per_instance %d, queue_timeout %v; want 64, 2s", s.MaxConnsPerInstance, s.QueueTimeout)
		}
	}
	if _, err := gateway.New(gc); err != nil {
		t.Fatalf("gateway from full.yaml: %v", err)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse("effective.yaml", b, lookup(map[string]string{"JWT_SECRET": c.Auth.JWTSecret})); err != nil {
		t.Errorf("effective full config does not load: %v", err)
	}
}
