package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

var secret = []byte("0123456789abcdef0123456789abcdef") // 32 bytes, tests only

// clock is a manual clock shared by the limiter, the token checks and the
// breakers, so that limits and expiries are exact.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// start builds the program's gateway in front of urls and serves it on a
// loopback port until the test ends.
func start(t *testing.T, urls []string, perIP int, clk *clock) (string, *gateway.Gateway) {
	t.Helper()
	g, err := newGateway(settings{
		Instances: urls, Secret: secret, PerIP: perIP, Window: time.Minute, Now: clk.Now,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("newGateway() error = %v", err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)
	return srv.URL, g
}

func get(t *testing.T, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func backends(t *testing.T, faults ...gatewaytest.Fault) ([]*gatewaytest.FaultBackend, []string) {
	t.Helper()
	var bs []*gatewaytest.FaultBackend
	var urls []string
	for i, f := range faults {
		b := gatewaytest.NewFaultBackend(t, "catalog-"+string(rune('1'+i)), f)
		bs = append(bs, b)
		urls = append(urls, b.URL())
	}
	return bs, urls
}

// While two instances each hold a slow request, least connections sends
// every new request to the third, the one with nothing in flight (a round
// robin would send it a third of them).
func TestLeastConnectionsAvoidsBusyInstances(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan string, 2)
	var urls []string
	for _, name := range []string{"a", "b", "c"} {
		b := gatewaytest.NewBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/catalog/slow" {
				arrived <- name
				<-release
			}
			io.WriteString(w, name)
		}))
		urls = append(urls, b.URL)
	}
	base, _ := start(t, urls, 100, newClock())

	busy := map[string]bool{}
	done := make(chan struct{}, 2)
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			if resp, err := http.Get(base + "/api/catalog/slow"); err == nil {
				resp.Body.Close()
			}
		}()
		// Wait until the request is at its instance, hence counted in
		// flight, before sending the next.
		busy[<-arrived] = true
	}
	if len(busy) != 2 {
		t.Errorf("two overlapping requests went to %v, want two different instances", busy)
	}
	for i := range 10 {
		_, body := get(t, base+"/api/catalog/items", "")
		if busy[string(body)] || len(body) != 1 {
			t.Errorf("request %d went to %q while it was busy (busy: %v)", i, body, busy)
		}
	}
	close(release)
	for range 2 {
		<-done
	}
}

// Sequential requests find every instance idle; ties are broken at random,
// so all three instances get a share.
func TestRequestsReachEveryInstance(t *testing.T) {
	bs, urls := backends(t, gatewaytest.Fault{}, gatewaytest.Fault{}, gatewaytest.Fault{})
	base, _ := start(t, urls, 1000, newClock())
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 3; i++ {
		resp, _ := get(t, base+"/api/catalog/items", "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET = %d, want 200", resp.StatusCode)
		}
		seen[resp.Header.Get("X-Backend")] = true
	}
	for _, b := range bs {
		if !seen[b.Name] || b.Hits() == 0 {
			t.Errorf("instance %s was never used (seen %v)", b.Name, seen)
		}
	}
}

func TestPerIPRateLimit(t *testing.T) {
	_, urls := backends(t, gatewaytest.Fault{}, gatewaytest.Fault{}, gatewaytest.Fault{})
	clk := newClock()
	base, _ := start(t, urls, 5, clk) // 5 per minute: a token every 12s

	steps := []struct {
		advance time.Duration
		want    int
	}{
		{0, 200}, {0, 200}, {0, 200}, {0, 200}, {0, 200},
		{0, 429},
		{11 * time.Second, 429},
		{time.Second, 200}, // 12s after the bucket ran dry, one token is back
		{0, 429},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		resp, body := get(t, base+"/api/catalog/items", "")
		if resp.StatusCode != s.want {
			t.Fatalf("step %d: GET = %d, want %d", i, resp.StatusCode, s.want)
		}
		if s.want != 429 {
			continue
		}
		var p struct{ Type string }
		json.Unmarshal(body, &p)
		if !strings.HasSuffix(p.Type, "#problem-rate-limited") || resp.Header.Get("Retry-After") == "" {
			t.Errorf("step %d: 429 with type %q and Retry-After %q, want rate-limited and a Retry-After", i, p.Type, resp.Header.Get("Retry-After"))
		}
	}
	if got, _ := get(t, base+gateway.PathHealth, ""); got.StatusCode != 200 {
		t.Errorf("GET /health over the limit = %d, want 200 (system endpoints are never limited)", got.StatusCode)
	}
}

func TestProtectedRoute(t *testing.T) {
	_, urls := backends(t, gatewaytest.Fault{}, gatewaytest.Fault{}, gatewaytest.Fault{})
	clk := newClock()
	base, _ := start(t, urls, 1000, clk)
	mint := func(secret []byte, subject string, ttl time.Duration, roles ...string) string {
		t.Helper()
		tok, err := authn.MintHS256(secret, authn.MintClaims{Subject: subject, Roles: roles, TTL: ttl, IssuedAt: clk.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admin := mint(secret, "grace", 0, "admin")
	expired := mint(secret, "grace", time.Minute, "admin")
	tests := []struct {
		name  string
		path  string
		token string
		want  int
	}{
		{"public without token", "/api/catalog/items", "", 200},
		{"protected without token", "/api/admin/stats", "", 401},
		{"protected with another role", "/api/admin/stats", mint(secret, "ada", 0, "viewer"), 403},
		{"protected with no role", "/api/admin/stats", mint(secret, "ada", 0), 403},
		{"protected with a forged token", "/api/admin/stats", mint([]byte("another secret of at least 32 bytes!"), "eve", 0, "admin"), 401},
		{"protected with garbage", "/api/admin/stats", "not.a.token", 401},
		{"protected with admin", "/api/admin/stats", admin, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := get(t, base+tt.path, tt.token)
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.want)
			}
			if tt.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// The backend learns who called from the gateway, never from the client.
	req, _ := http.NewRequest("GET", base+"/api/admin/stats", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("X-User-ID", "mallory")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e gatewaytest.Echo
	json.NewDecoder(r.Body).Decode(&e)
	r.Body.Close()
	if got := http.Header(e.Headers).Get("X-User-ID"); got != "grace" {
		t.Errorf("backend saw X-User-ID %q, want grace", got)
	}

	clk.Advance(2 * time.Minute) // past the short token's expiry and leeway
	if resp, _ := get(t, base+"/api/admin/stats", expired); resp.StatusCode != 401 {
		t.Errorf("GET with an expired token = %d, want 401", resp.StatusCode)
	}
	if resp, _ := get(t, base+"/api/admin/stats", admin); resp.StatusCode != 200 {
		t.Errorf("GET with a valid token after 2m = %d, want 200", resp.StatusCode)
	}
	// The public route is GET only.
	pr, err := http.Post(base+"/api/catalog/items", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	pr.Body.Close()
	if pr.StatusCode != 405 {
		t.Errorf("POST /api/catalog/items = %d, want 405", pr.StatusCode)
	}
}

// The custom breaker settings take a failing instance out after 3
// failures in a row; with the clock stopped it stays out.
func TestBreakerTakesFailingInstanceOut(t *testing.T) {
	bs, urls := backends(t, gatewaytest.Fault{}, gatewaytest.Fault{}, gatewaytest.Fault{Status: 500})
	bad := bs[2]
	base, g := start(t, urls, 10000, newClock())
	fails := 0
	for i := 0; i < 500 && bad.Hits() < 3; i++ {
		resp, _ := get(t, base+"/api/catalog/items", "")
		if resp.StatusCode == 500 {
			fails++
		}
	}
	if bad.Hits() != 3 || fails != 3 {
		t.Fatalf("failing instance hit %d times, client saw %d 500s; want 3 and 3", bad.Hits(), fails)
	}
	if got := instanceState(g, bad.Addr()); got != "breaker_open" {
		t.Errorf("state of the failing instance = %q, want breaker_open", got)
	}
	for range 30 {
		if resp, _ := get(t, base+"/api/catalog/items", ""); resp.StatusCode != 200 {
			t.Fatalf("GET with the failing instance out = %d, want 200", resp.StatusCode)
		}
	}
	if bad.Hits() != 3 {
		t.Errorf("failing instance hit %d times, want no more than the 3 that tripped its breaker", bad.Hits())
	}
}

func instanceState(g *gateway.Gateway, addr string) string {
	for _, s := range g.Health().Services {
		for _, in := range s.Instances {
			if strings.Contains(in.URL, addr) {
				return in.State
			}
		}
	}
	return "missing"
}

// Two requests per minute per client address: the per-IP limit runs before
// authentication (so credential guessing is limited too), which is why the
// refused first request counts against it.
func Example() {
	b, _ := gatewaytest.StartFaultBackend("catalog-1", gatewaytest.Fault{})
	defer b.Close()
	g, err := newGateway(settings{
		Instances: []string{b.URL()}, Secret: secret, PerIP: 2, Window: time.Minute,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	admin, _ := authn.MintHS256(secret, authn.MintClaims{Subject: "grace", Roles: []string{"admin"}})
	for _, c := range []struct{ path, token string }{
		{"/api/admin/stats", ""}, {"/api/admin/stats", admin}, {"/api/catalog/items", ""},
	} {
		req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(c.path, resp.StatusCode)
	}
	// Output:
	// /api/admin/stats 401
	// /api/admin/stats 200
	// /api/catalog/items 429
}
