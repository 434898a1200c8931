package gateway

import (
	"net/http"
	"testing"

	"github.com/pyairtable/api-gateway/balancer"
)

// defaultRoutes mirrors the embedded default configuration's routes.
var benchRoutes = []Route{
	{Name: "auth", Prefix: "/api/v1/auth", Service: "s", Public: true},
	{Name: "users-list", Path: "/api/v1/users", Methods: []string{"GET"}, Service: "s"},
	{Name: "users", Prefix: "/api/v1/users", Service: "s"},
	{Name: "workspaces", Prefix: "/api/v1/workspaces", Service: "s"},
	{Name: "bases", Prefix: "/api/v1/bases", Service: "s"},
	{Name: "tables", Prefix: "/api/v1/tables", Service: "s"},
	{Name: "views", Prefix: "/api/v1/views", Service: "s"},
	{Name: "records", Prefix: "/api/v1/records", Service: "s"},
	{Name: "fields", Prefix: "/api/v1/fields", Service: "s"},
	{Name: "formulas", Prefix: "/api/v1/formulas", Service: "s"},
	{Name: "llm", Prefix: "/api/v1/llm", Service: "s"},
	{Name: "files", Prefix: "/api/v1/files", Service: "s"},
	{Name: "airtable", Prefix: "/api/v1/airtable", Service: "s"},
	{Name: "analytics", Prefix: "/api/v1/analytics", Service: "s"},
	{Name: "workflows", Prefix: "/api/v1/workflows", Service: "s"},
	{Name: "workflow-run", Path: "/api/v1/workflows/run", Methods: []string{"POST"}, Service: "s"},
}

func BenchmarkRoutingEngine(b *testing.B) {
	g, err := New(Config{
		Services: []Service{{Name: "s", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:1", 1)}}},
		Routes:   benchRoutes,
	})
	if err != nil {
		b.Fatal(err)
	}
	rt := g.tbl.Load().router
	reqs := []struct{ method, path string }{
		{"GET", "/api/v1/users"},
		{"GET", "/api/v1/users/me"},
		{"POST", "/api/v1/records/rec123/comments"},
		{"GET", "/api/v1/workflows/wf1/runs/42/steps"},
		{"GET", "/api/v1/auth/login"},
		{"DELETE", "/api/v1/tables/tbl9"},
		{"GET", "/api/v1/nothing/here"},
		{"POST", "/api/v1/workflows/run"},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := reqs[i%len(reqs)]
		p, _ := cleanPath(r.path)
		rt.lookup(r.method, "api.example.com", p)
	}
}

func TestRoutingDoesNotAllocate(t *testing.T) {
	g, err := New(Config{
		Services: []Service{{Name: "s", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:1", 1)}}},
		Routes:   benchRoutes,
	})
	if err != nil {
		t.Fatal(err)
	}
	rt := g.tbl.Load().router
	allocs := testing.AllocsPerRun(1000, func() {
		p, _ := cleanPath("/api/v1/workflows/wf1/runs/42/steps")
		if e, k := rt.lookup("GET", "api.example.com:8080", p); k != matchOK || e.route.Name != "workflows" {
			t.Fatalf("lookup = %v, %v", e, k)
		}
	})
	if allocs != 0 {
		t.Errorf("route lookup allocates %v times per call, want 0", allocs)
	}
}

// discardWriter is a ResponseWriter that keeps nothing, with one header
// map reused across calls so a benchmark measures the handler alone.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

func BenchmarkHealthEndpoint(b *testing.B) {
	g, err := New(Config{
		Services: []Service{{Name: "s", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:1", 1)}}},
		Routes:   benchRoutes,
	})
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "/health", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g.ServeHTTP(w, req)
	}
	if w.code != 200 {
		b.Fatalf("status %d", w.code)
	}
}

// TestHealthDoesNotAllocate keeps the probe endpoint free of allocations
// (BenchmarkHealthEndpoint measures the same path).
func TestHealthDoesNotAllocate(t *testing.T) {
	g, err := New(Config{
		Services: []Service{{Name: "s", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:1", 1)}}},
		Routes:   benchRoutes,
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "/health", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	w := &discardWriter{h: http.Header{}}
	g.ServeHTTP(w, req)
	allocs := testing.AllocsPerRun(1000, func() {
		clear(w.h)
		g.ServeHTTP(w, req)
	})
	if allocs != 0 || w.code != 200 {
		t.Errorf("/health: %v allocs per request, status %d; want 0 and 200", allocs, w.code)
	}
}
