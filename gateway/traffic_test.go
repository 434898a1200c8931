package gateway_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
	"github.com/pyairtable/api-gateway/gateway/transform"
)

func TestTransformsVisibleAtBackendAndClient(t *testing.T) {
	b := gatewaytest.NewBackend(t, "users", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal-Version", "v7")
		w.Header().Set("X-Backend", "users")
		gatewaytest.EchoHandler("users").ServeHTTP(w, r)
	}))
	tr, problems := transform.Compile(transform.Spec{
		Request: transform.RequestSpec{
			Headers: transform.HeaderOps{
				Set:    map[string]string{"X-Gateway-Request": "${request_id}", "X-Client": "${client_ip}"},
				Remove: []string{"X-Debug"},
				Rename: map[string]string{"X-Legacy-Token": "X-Token"},
			},
			Path:  transform.PathOps{Match: "/api/v1/users/{id}/avatar", Replace: "/avatars/{id}"},
			Query: transform.QueryOps{Set: map[string]string{"size": "large"}, Remove: []string{"debug"}},
		},
		Response: transform.ResponseSpec{Headers: transform.HeaderOps{
			Remove: []string{"X-Internal-Version"},
			Set:    map[string]string{"X-Served-By": "gateway"},
		}},
	})
	if problems != nil {
		t.Fatal(problems)
	}
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "users", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/api/v1/users", Service: "users", Transform: tr}},
	})
	req, _ := http.NewRequest("GET", base+"/api/v1/users/42/avatar?debug=1&x=2", nil)
	req.Header.Set("X-Debug", "1")
	req.Header.Set("X-Legacy-Token", "abc")
	req.Header.Set("X-Request-ID", "req-transform-1")
	res := do(t, req)
	seen := http.Header(res.echo.Headers)
	if res.echo.Path != "/avatars/42" || res.echo.Query != "x=2&size=large" {
		t.Errorf("backend saw %s?%s, want /avatars/42?x=2&size=large", res.echo.Path, res.echo.Query)
	}
	if seen.Get("X-Gateway-Request") != "req-transform-1" || seen.Get("X-Client") != "127.0.0.1" || seen.Get("X-Debug") != "" ||
		seen.Get("X-Token") != "abc" || seen.Get("X-Legacy-Token") != "" {
		t.Errorf("backend headers: %v", seen)
	}
	if res.header.Get("X-Internal-Version") != "" || res.header.Get("X-Served-By") != "gateway" || res.header.Get("X-Backend") != "users" {
		t.Errorf("client headers: %v", res.header)
	}
}

func TestWeightedSplit(t *testing.T) {
	v1 := gatewaytest.NewBackend(t, "v1", nil)
	v2 := gatewaytest.NewBackend(t, "v2", nil)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{
			{Name: "v1", Instances: []*balancer.Instance{inst(t, v1.URL)}},
			{Name: "v2", Instances: []*balancer.Instance{inst(t, v2.URL)}},
		},
		Routes: []gateway.Route{
			{Name: "random", Prefix: "/r", Split: []gateway.SplitTarget{{Service: "v1", Weight: 90}, {Service: "v2", Weight: 10}}},
			{Name: "sticky", Prefix: "/s", Split: []gateway.SplitTarget{{Service: "v1", Weight: 50}, {Service: "v2", Weight: 50}}, SplitSticky: gateway.SplitByCookie},
		},
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	const n = 5000
	for i := 0; i < n; i++ {
		resp, err := client.Get(base + "/r/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	share := float64(v2.Hits()) / n
	if share < 0.07 || share > 0.13 {
		t.Errorf("v2 share %.3f over %d requests, want 0.10 ± 0.03", share, n)
	}
	// Sticky by cookie: each client stays on one side.
	for c := 0; c < 20; c++ {
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Transport: tr, Jar: jar}
		sides := map[string]bool{}
		for i := 0; i < 10; i++ {
			resp, err := cl.Get(base + "/s/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"service":"v1"`) {
				sides["v1"] = true
			} else {
				sides["v2"] = true
			}
		}
		if len(sides) != 1 {
			t.Errorf("client %d flipped between versions: %v", c, sides)
		}
	}
}

func TestMirrorNeverAffectsTheClient(t *testing.T) {
	primary := gatewaytest.NewBackend(t, "primary", nil)
	var mirrored atomic.Int64
	release := make(chan struct{})
	hang := gatewaytest.NewBackend(t, "shadow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mirrored.Add(1)
		select {
		case <-release: // hangs until the test ends
		case <-r.Context().Done():
		}
		w.WriteHeader(500)
	}))
	t.Cleanup(func() { close(release) }) // runs before the backend's Close
	measure := func(base string) (p50, p99 time.Duration) {
		var ds []time.Duration
		for i := 0; i < 200; i++ {
			start := time.Now()
			resp, err := http.Post(base+"/api/x", "text/plain", strings.NewReader("payload"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d with a mirror", resp.StatusCode)
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2], ds[len(ds)*99/100]
	}
	_, plain := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "primary", Instances: []*balancer.Instance{inst(t, primary.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/api", Service: "primary"}},
	})
	_, withMirror := newGateway(t, gateway.Config{
		Services: []gateway.Service{
			{Name: "primary", Instances: []*balancer.Instance{inst(t, primary.URL)}},
			{Name: "shadow", Instances: []*balancer.Instance{inst(t, hang.URL)}},
		},
		Routes: []gateway.Route{{Prefix: "/api", Service: "primary", Mirror: &gateway.Mirror{Service: "shadow", Percent: 100, Queue: 16, Timeout: 5 * time.Second}}},
	})
	_, p99a := measure(plain)
	_, p99b := measure(withMirror)
	if p99b > 2*p99a+5*time.Millisecond {
		t.Errorf("p99 with a hanging mirror %v vs %v without", p99b, p99a)
	}
	// Four workers hang, sixteen copies wait; the rest were dropped.
	if m := mirrored.Load(); m > 4+16 || m == 0 {
		t.Errorf("the hanging mirror received %d copies; the queue should bound it to 20", m)
	}
}

func TestFallbackEngagesAndDisengages(t *testing.T) {
	main := gatewaytest.NewBackend(t, "main", nil)
	backup := gatewaytest.NewBackend(t, "backup", nil)
	mainIn := inst(t, main.URL)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{
			{Name: "main", Instances: []*balancer.Instance{mainIn}},
			{Name: "backup", Instances: []*balancer.Instance{inst(t, backup.URL)}},
			{Name: "solo", Instances: []*balancer.Instance{mainIn}},
		},
		Routes: []gateway.Route{
			{Prefix: "/api", Service: "main", Fallback: &gateway.Fallback{Service: "backup"}},
			{Prefix: "/static", Service: "solo", Fallback: &gateway.Fallback{Problem: &gateway.Problem{Status: 503, Title: "Maintenance", Detail: "back soon", RetryAfter: 30 * time.Second}}},
		},
	})
	svc := func() string { return get(t, base+"/api/x").echo.Service }
	if s := svc(); s != "main" {
		t.Fatalf("healthy: %q", s)
	}
	mainIn.SetFlag(balancer.Unhealthy, true)
	if s := svc(); s != "backup" {
		t.Errorf("primary down: served by %q, want backup", s)
	}
	res := get(t, base+"/static/x")
	if res.status != 503 || res.problem["title"] != "Maintenance" || res.header.Get("Retry-After") != "30" {
		t.Errorf("static fallback: %d %v", res.status, res.problem)
	}
	mainIn.SetFlag(balancer.Unhealthy, false)
	if s := svc(); s != "main" {
		t.Errorf("primary back: served by %q, want main", s)
	}
}
