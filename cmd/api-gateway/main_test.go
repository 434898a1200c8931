package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestCheck(t *testing.T) {
	code, out, errOut := runCmd(t, "check")
	if code != 0 || !strings.Contains(out, "ok (14 services, 15 routes") {
		t.Errorf("check (embedded) = %d, %q, %q", code, out, errOut)
	}
	code, _, errOut = runCmd(t, "check", "-config", "../../testdata/invalid/bad-url.yaml")
	if code != 1 || !strings.Contains(errOut, `bad-url.yaml:3: services.auth_service.url: "htp//x" is not an absolute http(s) URL`) {
		t.Errorf("check bad-url = %d, stderr %q", code, errOut)
	}
	code, out, _ = runCmd(t, "check", "-print")
	if code != 0 || !strings.Contains(out, "read_header_timeout: 10s") || !strings.Contains(out, "max_idle_conns_per_host: 100") {
		t.Errorf("check -print = %d, %q", code, out)
	}
	code, _, errOut = runCmd(t, "check", "-config", "/does/not/exist.yaml")
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("check missing file = %d, %q", code, errOut)
	}
}

func TestRoute(t *testing.T) {
	code, out, _ := runCmd(t, "route", "GET", "/api/v1/users")
	if code != 0 || !strings.Contains(out, "route:     users-list") || !strings.Contains(out, "roles:     admin") {
		t.Errorf("route GET /api/v1/users = %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, "route", "GET", "/api/v1/auth/login")
	if code != 0 || !strings.Contains(out, "auth:      public") || !strings.Contains(out, "service:   auth_service") {
		t.Errorf("route auth = %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, "route", "GET", "/api/v1/public/../records/1")
	if code != 0 || !strings.Contains(out, "forwarded: /api/v1/records/1") {
		t.Errorf("route traversal = %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, "route", "GET", "/nope")
	if code != 1 || !strings.Contains(out, "404") {
		t.Errorf("route /nope = %d\n%s", code, out)
	}
	if !strings.Contains(routeOut(t, "GET", "/api/v1/records"), "queue:     none") {
		t.Errorf("route without a queue bound does not say so")
	}
	cfg := filepath.Join(t.TempDir(), "queue.yaml")
	os.WriteFile(cfg, []byte("services:\n  records:\n    url: http://127.0.0.1:8087\n    max_conns_per_instance: 16\nroutes:\n  - {prefix: /api/v1/records, service: records}\n"), 0o600)
	code, out, _ = runCmd(t, "route", "-config", cfg, "GET", "/api/v1/records/7")
	if code != 0 || !strings.Contains(out, "queue:     beyond 16 in flight per instance") {
		t.Errorf("route with max_conns_per_instance = %d\n%s", code, out)
	}
}

func routeOut(t *testing.T, method, path string) string {
	t.Helper()
	_, out, _ := runCmd(t, "route", method, path)
	return out
}

func TestToken(t *testing.T) {
	t.Setenv("JWT_SECRET", "token-test-secret-0123456789abcdef012")
	code, out, errOut := runCmd(t, "token", "-sub", "u42", "-roles", "admin,ops", "-tenant", "t1", "-ttl", "5m")
	if code != 0 || strings.Count(strings.TrimSpace(out), ".") != 2 {
		t.Fatalf("token = %d, %q, %q", code, out, errOut)
	}
	j, err := authn.NewJWT(authn.JWTSettings{Secret: []byte("token-test-secret-0123456789abcdef012")})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(out))
	p, err := j.Authenticate(req)
	if err != nil || p.Subject != "u42" || p.Tenant != "t1" || len(p.Roles) != 2 {
		t.Errorf("minted token: %+v, %v", p, err)
	}
	t.Setenv("ENVIRONMENT", "production")
	if code, _, errOut := runCmd(t, "token", "-sub", "u42"); code != 1 || !strings.Contains(errOut, "refused in production") {
		t.Errorf("token in production = %d, %q", code, errOut)
	}
}

func TestVersionAndUsage(t *testing.T) {
	if code, out, _ := runCmd(t, "version"); code != 0 || !strings.HasPrefix(out, "api-gateway ") {
		t.Errorf("version = %d %q", code, out)
	}
	if code, _, errOut := runCmd(t, "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command = %d %q", code, errOut)
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a port free on every address, below Linux's ephemeral
// range (32768 up): a port from ":0" comes from that range, and between
// the check and the gateway's bind, any outgoing connection of a test
// running in parallel may take it as its source port.
func freePort(t *testing.T) int {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue // closed again, but promised to an earlier caller
		}
		portsGiven[port] = true
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

func TestServe(t *testing.T) {
	backend := gatewaytest.NewBackend(t, "records", nil)
	port, admin := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`server:
  host: 127.0.0.1
  port: %d
  shutdown_delay: 0s
admin:
  port: %d
log:
  level: warn
services:
  records:
    url: %q
routes:
  - prefix: /api/v1/records
    service: records
    public: true
`, port, admin, backend.URL)
	file := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(file, []byte(cfg), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"-config", file}, io.Discard, io.Discard) }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var resp *http.Response
	var err error
	for i := 0; i < 100; i++ {
		if resp, err = http.Get(base + "/api/v1/records/1"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || backend.Hits() != 1 {
		t.Errorf("proxied status %d, backend hits %d", resp.StatusCode, backend.Hits())
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/health/detailed", admin))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("admin /health/detailed = %d", resp.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop")
	}
}

func TestServeRefusesInvalidConfig(t *testing.T) {
	var e bytes.Buffer
	code := run(context.Background(), []string{"-config", "../../testdata/invalid/routes.yaml"}, io.Discard, &e)
	if code != 1 || !strings.Contains(e.String(), "routes.yaml:10: routes[2].service") {
		t.Errorf("serve invalid = %d, %q", code, e.String())
	}
}
