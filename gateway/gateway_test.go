package gateway_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// newGateway builds a gateway and serves it on a real loopback listener.
func newGateway(t testing.TB, cfg gateway.Config) (*gateway.Gateway, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Auth == nil {
		// Proxying tests run without an authenticator; with one, every
		// route not marked public would answer 401 (auth_test.go).
		for i := range cfg.Routes {
			cfg.Routes[i].Public = true
		}
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv.URL
}

func inst(t testing.TB, url string) *balancer.Instance {
	t.Helper()
	in, err := balancer.NewInstance(url, 1)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

type echoResult struct {
	status  int
	header  http.Header
	echo    gatewaytest.Echo
	problem map[string]any
}

func do(t testing.TB, req *http.Request) echoResult {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	res := echoResult{status: resp.StatusCode, header: resp.Header}
	switch resp.Header.Get("Content-Type") {
	case "application/json":
		json.Unmarshal(body, &res.echo)
	case "application/problem+json":
		if err := json.Unmarshal(body, &res.problem); err != nil {
			t.Fatalf("problem body %q: %v", body, err)
		}
	}
	return res
}

func get(t testing.TB, url string) echoResult {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func TestRouting(t *testing.T) {
	users := gatewaytest.NewBackend(t, "users", nil)
	usersList := gatewaytest.NewBackend(t, "users-list", nil)
	me := gatewaytest.NewBackend(t, "me", nil)
	admin := gatewaytest.NewBackend(t, "admin", nil)
	public := gatewaytest.NewBackend(t, "public", nil)
	hosted := gatewaytest.NewBackend(t, "hosted", nil)
	writer := gatewaytest.NewBackend(t, "writer", nil)
	root := gatewaytest.NewBackend(t, "root", nil)
	svc := func(b *gatewaytest.Backend) gateway.Service {
		return gateway.Service{Name: b.Name, Instances: []*balancer.Instance{inst(t, b.URL)}}
	}
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{svc(users), svc(usersList), svc(me), svc(admin), svc(public), svc(hosted), svc(writer), svc(root)},
		Routes: []gateway.Route{
			{Prefix: "/api/v1/users", Service: "users"},
			{Path: "/api/v1/users", Methods: []string{"GET"}, Service: "users-list"},
			{Prefix: "/api/v1/users/me", Service: "me"},
			{Prefix: "/api/v1/admin", Service: "admin"},
			{Prefix: "/api/v1/public", Service: "public"},
			{Prefix: "/api/v1/public", Host: "api.example.com", Service: "hosted"},
			{Prefix: "/api/v1/items", Methods: []string{"POST", "PUT"}, Service: "writer"},
			{Path: "/", Service: "root"},
		},
	})
	tests := []struct {
		method, path, host string
		status             int
		service            string
		fwdPath            string
	}{
		{"GET", "/api/v1/users", "", 200, "users-list", "/api/v1/users"},
		{"GET", "/api/v1/users/", "", 200, "users-list", "/api/v1/users/"},
		{"HEAD", "/api/v1/users", "", 200, "", ""},
		{"POST", "/api/v1/users", "", 200, "users", "/api/v1/users"},
		{"GET", "/api/v1/users/42", "", 200, "users", "/api/v1/users/42"},
		{"GET", "/api/v1/users/me", "", 200, "me", "/api/v1/users/me"},
		{"GET", "/api/v1/users/me/settings", "", 200, "me", "/api/v1/users/me/settings"},
		{"GET", "/api/v1/users/meX", "", 200, "users", "/api/v1/users/meX"},
		{"GET", "/api/v1/usersX", "", 404, "", ""},
		{"GET", "/api/v1/user", "", 404, "", ""},
		{"GET", "/api/v1/public/../admin", "", 200, "admin", "/api/v1/admin"},
		{"GET", "/api/v1/public/./x", "", 200, "public", "/api/v1/public/x"},
		{"GET", "/api/v1//public//x", "", 200, "public", "/api/v1/public/x"},
		{"GET", "/api/v1/public/%2e%2e/admin", "", 400, "", ""}, // encoded dot segments are refused
		{"GET", "/api/v1/public/x", "api.example.com", 200, "hosted", "/api/v1/public/x"},
		{"GET", "/api/v1/public/x", "API.Example.com:8080", 200, "hosted", "/api/v1/public/x"},
		{"GET", "/api/v1/public/x", "other.example.com", 200, "public", "/api/v1/public/x"},
		{"POST", "/api/v1/items/1", "", 200, "writer", "/api/v1/items/1"},
		{"GET", "/api/v1/items/1", "", 405, "", ""},
		{"GET", "/", "", 200, "root", "/"},
		{"GET", "/nothing", "", 404, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.host+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			req.URL.Opaque = tt.path // send the path exactly as written
			if tt.host != "" {
				req.Host = tt.host
			}
			res := do(t, req)
			if res.status != tt.status {
				t.Fatalf("status = %d, want %d (problem %v)", res.status, tt.status, res.problem)
			}
			if tt.service != "" && res.echo.Service != tt.service {
				t.Errorf("service = %q, want %q", res.echo.Service, tt.service)
			}
			if tt.fwdPath != "" && res.echo.Path != tt.fwdPath {
				t.Errorf("forwarded path = %q, want %q", res.echo.Path, tt.fwdPath)
			}
			if tt.status >= 400 {
				if res.problem["status"] != float64(tt.status) || res.problem["request_id"] == "" || res.problem["type"] == "" || res.problem["title"] == "" {
					t.Errorf("problem = %v, want type, title, status %d and request_id", res.problem, tt.status)
				}
			}
			if tt.status == 405 && res.header.Get("Allow") != "POST, PUT" {
				t.Errorf("Allow = %q, want %q", res.header.Get("Allow"), "POST, PUT")
			}
		})
	}
}

func TestStripPrefixAndQuery(t *testing.T) {
	b := gatewaytest.NewBackend(t, "files", nil)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "files", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/api/v1/files", Service: "files", StripPrefix: true}},
	})
	for path, want := range map[string]string{
		"/api/v1/files":         "/",
		"/api/v1/files/":        "/",
		"/api/v1/files/a/b.txt": "/a/b.txt",
	} {
		res := get(t, base+path+"?x=1&y=2")
		if res.echo.Path != want || res.echo.Query != "x=1&y=2" {
			t.Errorf("GET %s: forwarded %q?%s, want %q?x=1&y=2", path, res.echo.Path, res.echo.Query, want)
		}
	}
}

func TestForwardingHeaders(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	cfg := func(trusted ...string) gateway.Config {
		p, err := gateway.NewProxies(trusted...)
		if err != nil {
			t.Fatal(err)
		}
		return gateway.Config{
			Services:       []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
			Routes:         []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
			TrustedProxies: p,
		}
	}
	t.Run("untrusted peer", func(t *testing.T) {
		_, base := newGateway(t, cfg())
		req, _ := http.NewRequest("GET", base+"/x", nil)
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Host", "evil.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Forwarded", "for=6.6.6.6")
		req.Header.Set("X-Real-IP", "6.6.6.6")
		res := do(t, req)
		h := http.Header(res.echo.Headers)
		if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want [127.0.0.1]", got)
		}
		if got := h.Get("X-Real-Ip"); got != "127.0.0.1" {
			t.Errorf("X-Real-IP = %q, want 127.0.0.1", got)
		}
		if got := h.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto = %q, want http", got)
		}
		if got := h.Get("X-Forwarded-Host"); !strings.HasPrefix(got, "127.0.0.1:") {
			t.Errorf("X-Forwarded-Host = %q, want the gateway host", got)
		}
		if got := h.Get("Forwarded"); got != "" {
			t.Errorf("Forwarded = %q, want it stripped", got)
		}
	})
	t.Run("trusted peer", func(t *testing.T) {
		_, base := newGateway(t, cfg("127.0.0.0/8"))
		req, _ := http.NewRequest("GET", base+"/x", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.7, 10.1.2.3")
		res := do(t, req)
		h := http.Header(res.echo.Headers)
		if got := h.Get("X-Forwarded-For"); got != "203.0.113.7, 10.1.2.3, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want the chain extended", got)
		}
		if got := h.Get("X-Real-Ip"); got != "10.1.2.3" {
			t.Errorf("X-Real-IP = %q, want 10.1.2.3 (first untrusted hop from the right)", got)
		}
	})
}

func TestHopByHopHeaders(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	req, _ := http.NewRequest("GET", base+"/x", nil)
	req.Header.Set("Connection", "X-Secret-Hop, X-Request-ID, X-Forwarded-For")
	req.Header.Set("X-Secret-Hop", "1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("TE", "trailers, deflate")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("X-Request-ID", "abc-123")
	req.Header.Set("X-Kept", "yes")
	res := do(t, req)
	h := http.Header(res.echo.Headers)
	for _, name := range []string{"X-Secret-Hop", "Keep-Alive", "Proxy-Authorization", "Upgrade"} {
		if v := h.Get(name); v != "" {
			t.Errorf("backend saw %s = %q, want it stripped", name, v)
		}
	}
	if h.Get("X-Kept") != "yes" {
		t.Errorf("X-Kept missing at the backend")
	}
	// Headers the gateway adds survive being named in Connection.
	if h.Get("X-Request-Id") != "abc-123" || h.Get("X-Forwarded-For") == "" {
		t.Errorf("gateway headers removed by Connection: X-Request-ID=%q X-Forwarded-For=%q", h.Get("X-Request-Id"), h.Get("X-Forwarded-For"))
	}
}

func TestRequestID(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-ID", "backend-made-up")
		gatewaytest.EchoHandler("svc").ServeHTTP(w, r)
	}))
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/api", Service: "svc"}},
	})
	cases := []struct {
		in   string
		keep bool
	}{
		{"", false},
		{"req-42_abc.def:1", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"has space", false},
		{"quote\"", false},
		{"<script>", false},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", base+"/api/x", nil)
		if c.in != "" {
			req.Header.Set("X-Request-ID", c.in)
		}
		res := do(t, req)
		got := res.header.Values("X-Request-Id")
		if len(got) != 1 {
			t.Fatalf("X-Request-ID %q: response has %q, want exactly one", c.in, got)
		}
		backendSaw := http.Header(res.echo.Headers).Get("X-Request-Id")
		if backendSaw != got[0] {
			t.Errorf("X-Request-ID %q: backend saw %q, client got %q", c.in, backendSaw, got[0])
		}
		if c.keep && got[0] != c.in {
			t.Errorf("X-Request-ID %q replaced by %q, want kept", c.in, got[0])
		}
		if !c.keep {
			if got[0] == c.in || len(got[0]) != 36 {
				t.Errorf("X-Request-ID %q: got %q, want a fresh UUID", c.in, got[0])
			}
			if seen[got[0]] {
				t.Errorf("generated id %q twice", got[0])
			}
			seen[got[0]] = true
		}
	}
	// Gateway-made errors carry the id too.
	req, _ := http.NewRequest("GET", base+"/nowhere", nil)
	req.Header.Set("X-Request-ID", "trace-me")
	res := do(t, req)
	if res.status != 404 || res.problem["request_id"] != "trace-me" || res.header.Get("X-Request-Id") != "trace-me" {
		t.Errorf("404: status %d, problem %v, header %q; want request_id trace-me", res.status, res.problem, res.header.Get("X-Request-Id"))
	}
}

func TestStreamingFlushes(t *testing.T) {
	release := make(chan struct{})
	b := gatewaytest.NewBackend(t, "sse", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	_, base := newGateway(t, gateway.Config{
		// The stream outlives the service timeout: streams are exempt.
		Services: []gateway.Service{{Name: "sse", Timeout: 200 * time.Millisecond, Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/events", Service: "sse"}},
	})
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	lineCh := make(chan string, 1)
	go func() {
		l, _ := br.ReadString('\n')
		lineCh <- l
	}()
	select {
	case l := <-lineCh:
		if l != "data: first\n" {
			t.Fatalf("first line = %q", l)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("first event not flushed to the client while the stream is open")
	}
	time.Sleep(300 * time.Millisecond) // past the service timeout
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: second") {
		t.Errorf("rest of stream = %q, want the second event (stream cut by timeout?)", rest)
	}
}

func TestErrorStatuses(t *testing.T) {
	slow := gatewaytest.NewBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	ok := gatewaytest.NewBackend(t, "ok", nil)
	dead := deadURL(t)
	down := inst(t, ok.URL)
	down.SetFlag(balancer.Unhealthy, true)
	_, base := newGateway(t, gateway.Config{
		BodyLimit: 1024,
		Services: []gateway.Service{
			{Name: "slow", Timeout: 150 * time.Millisecond, Instances: []*balancer.Instance{inst(t, slow.URL)}},
			{Name: "dead", Instances: []*balancer.Instance{inst(t, dead)}},
			{Name: "down", Instances: []*balancer.Instance{down}},
			{Name: "ok", Instances: []*balancer.Instance{inst(t, ok.URL)}},
		},
		Routes: []gateway.Route{
			{Prefix: "/slow", Service: "slow"},
			{Prefix: "/dead", Service: "dead"},
			{Prefix: "/down", Service: "down"},
			{Prefix: "/ok", Service: "ok"},
		},
	})
	t.Run("504", func(t *testing.T) {
		start := time.Now()
		res := get(t, base+"/slow")
		if el := time.Since(start); el > 150*time.Millisecond+200*time.Millisecond {
			t.Errorf("504 after %v, want about the 150ms timeout", el)
		}
		checkProblem(t, res, 504, "backend-timeout")
	})
	t.Run("502", func(t *testing.T) { checkProblem(t, get(t, base+"/dead"), 502, "bad-gateway") })
	t.Run("503", func(t *testing.T) {
		res := get(t, base+"/down")
		checkProblem(t, res, 503, "no-healthy-backend")
		if res.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	})
	t.Run("404", func(t *testing.T) { checkProblem(t, get(t, base+"/missing"), 404, "no-route") })
	t.Run("413 by Content-Length", func(t *testing.T) {
		hits := ok.Hits()
		req, _ := http.NewRequest("POST", base+"/ok", strings.NewReader(strings.Repeat("x", 2000)))
		checkProblem(t, do(t, req), 413, "body-too-large")
		if ok.Hits() != hits {
			t.Error("oversized body reached the backend")
		}
	})
	t.Run("413 chunked", func(t *testing.T) {
		req, _ := http.NewRequest("POST", base+"/ok", io.MultiReader(strings.NewReader(strings.Repeat("x", 2000))))
		req.ContentLength = -1
		res := do(t, req)
		checkProblem(t, res, 413, "body-too-large")
	})
	t.Run("body within limit", func(t *testing.T) {
		req, _ := http.NewRequest("POST", base+"/ok", strings.NewReader(strings.Repeat("x", 1000)))
		if res := do(t, req); res.status != 200 {
			t.Errorf("status = %d, want 200", res.status)
		}
	})
}

func checkProblem(t *testing.T, res echoResult, status int, typ string) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status = %d, want %d (%v)", res.status, status, res.problem)
	}
	if res.header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", res.header.Get("Content-Type"))
	}
	if res.problem["type"] != gateway.ProblemTypeBase+typ || res.problem["status"] != float64(status) ||
		res.problem["title"] == "" || res.problem["request_id"] == nil || res.problem["request_id"] != res.header.Get("X-Request-Id") {
		t.Errorf("problem = %v, want type %q, status %d, title and request_id", res.problem, typ, status)
	}
}

// deadURL returns the URL of a loopback port nobody listens on.
func deadURL(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestFailoverToAnotherInstance(t *testing.T) {
	ok := gatewaytest.NewBackend(t, "ok", nil)
	deadIn := inst(t, deadURL(t))
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{deadIn, inst(t, ok.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest("POST", base+"/x", strings.NewReader("payload"))
		if res := do(t, req); res.status != 200 {
			t.Fatalf("request %d: status %d, want 200 via the live instance", i, res.status)
		}
	}
	if ok.Hits() != 20 {
		t.Errorf("live instance hits = %d, want 20", ok.Hits())
	}
	if deadIn.Failures() == 0 {
		t.Error("dead instance recorded no failures")
	}
}

func TestClientCancelReachesBackend(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan struct{})
	b := gatewaytest.NewBackend(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(5 * time.Second):
		}
	}))
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/wait", nil)
	go func() {
		<-started
		cancel()
	}()
	_, err := http.DefaultClient.Do(req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("client error = %v, want canceled", err)
	}
	select {
	case <-canceled:
	case <-time.After(2 * time.Second):
		t.Fatal("the backend never saw the client's cancellation")
	}
}

func TestSystemEndpoints(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	g, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Version:  "v-test",
	})
	res := get(t, base+"/health")
	if res.status != 200 {
		t.Errorf("/health = %d", res.status)
	}
	if res := get(t, base+"/live"); res.status != 200 {
		t.Errorf("/live = %d", res.status)
	}
	if res := get(t, base+"/ready"); res.status != 503 {
		t.Errorf("/ready before SetReady = %d, want 503", res.status)
	}
	g.SetReady(true)
	if res := get(t, base+"/ready"); res.status != 200 {
		t.Errorf("/ready = %d, want 200", res.status)
	}
	get(t, base+"/proxied")
	resp, err := http.Get(base + "/health/detailed")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d gateway.Detailed
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.Version != "v-test" || len(d.Services) != 1 || d.Services[0].Instances[0].Requests != 1 || d.Services[0].Status != "up" {
		t.Errorf("detailed = %+v", d)
	}
	if b.Hits() != 1 {
		t.Errorf("backend hits = %d, want 1 (system endpoints are never proxied)", b.Hits())
	}
}

func TestReadyStaysUpWhenBackendsDown(t *testing.T) {
	down := inst(t, deadURL(t))
	down.SetFlag(balancer.Unhealthy, true)
	g, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{down}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	g.SetReady(true)
	if res := get(t, base+"/ready"); res.status != 200 {
		t.Errorf("/ready with every backend down = %d, want 200 (clear 503s beat connection errors)", res.status)
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "a", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:1", 1)}}, {Name: "empty"}},
		Routes: []gateway.Route{
			{Prefix: "/a", Service: "a"},
			{Prefix: "/a/", Service: "a", Name: "dup"},
			{Prefix: "/b", Service: "nope"},
			{Path: "/c", Prefix: "/c", Service: "a"},
			{Prefix: "/x/../y", Service: "a"},
			{Prefix: "/m", Methods: []string{"g e t"}, Service: "a"},
		},
	})
	if err == nil {
		t.Fatal("New() = nil error")
	}
	for _, want := range []string{`service "empty": has no instances`, `route "dup": duplicates route "/a/*"`, `unknown service "nope"`, "exactly one of path and prefix", "not a clean path", "invalid method"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestGracefulShutdownUnderLoad(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "ok")
	}))
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Server:   gateway.ServerSettings{ShutdownDelay: 200 * time.Millisecond, ShutdownTimeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	waitReady(t, base)

	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var ok, failed atomic.Int64
	var sawNotReady atomic.Bool
	var wg sync.WaitGroup
	stopLoad := make(chan struct{})
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				resp, err := client.Get(base + "/work")
				if err != nil {
					// After the listener closed, new connections are refused:
					// that is the load balancer's cue, not a lost request.
					if g.Draining() && isRefused(err) {
						return
					}
					failed.Add(1)
					t.Logf("request failed: %v", err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok" {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(150 * time.Millisecond)
	stop()
	// /ready must turn 503 at once while requests still flow.
	deadline := time.Now().Add(150 * time.Millisecond)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 503 {
				sawNotReady.Store(true)
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve() = %v", err)
	}
	close(stopLoad)
	wg.Wait()
	if !sawNotReady.Load() {
		t.Error("/ready did not report 503 during the shutdown delay")
	}
	if failed.Load() != 0 {
		t.Errorf("%d requests failed during graceful shutdown (%d ok)", failed.Load(), ok.Load())
	}
	if ok.Load() < 50 {
		t.Errorf("only %d requests completed; load too light to mean anything", ok.Load())
	}
}

func isRefused(err error) bool {
	return strings.Contains(err.Error(), "connection refused")
}

func waitReady(t testing.TB, base string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		resp, err := http.Get(base + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("gateway never became ready")
}

func TestGracefulShutdownWaitsForStreams(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(60 * time.Millisecond)
		}
	}))
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Server:   gateway.ServerSettings{ShutdownDelay: -1, ShutdownTimeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	waitReady(t, base)
	resp, err := http.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	stop()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.Count(string(body), "data:") != 5 {
		t.Errorf("stream during shutdown: %q, %v; want all 5 events", body, err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve() = %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		b := httptest.NewServer(gatewaytest.EchoHandler("svc"))
		defer b.Close()
		g, err := gateway.New(gateway.Config{
			Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
			Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
			Server:   gateway.ServerSettings{ShutdownDelay: -1},
		})
		if err != nil {
			t.Fatal(err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- g.Serve(ctx, ln) }()
		tr := &http.Transport{}
		c := &http.Client{Transport: tr}
		base := "http://" + ln.Addr().String()
		for i := 0; i < 10; i++ {
			if resp, err := c.Get(base + "/x"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		tr.CloseIdleConnections()
		stop()
		<-done
	}()
	for i := 0; i < 100; i++ {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
}

// A line is written within about FlushInterval even when nothing else
// comes to fill the buffer.
func TestAsyncWriterFlushesOnTime(t *testing.T) {
	var out syncBuffer
	w := gateway.NewAsyncWriter(&out, 0)
	defer w.Close()
	start := time.Now()
	w.Write([]byte("lonely line\n"))
	for out.String() == "" {
		if time.Since(start) > 2*time.Second {
			t.Fatal("the line was not written within 2s")
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingWriter holds every write until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	lines   int
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	b.mu.Lock()
	b.lines += bytes.Count(p, []byte("\n"))
	b.mu.Unlock()
	return len(p), nil
}

// A stuck sink costs lines, never a blocked request: Write returns at once
// and what does not fit is counted as dropped.
func TestAsyncWriterDropsWhenTheSinkIsStuck(t *testing.T) {
	sink := &blockingWriter{release: make(chan struct{})}
	w := gateway.NewAsyncWriter(sink, 10)
	start := time.Now()
	for i := 0; i < 100; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("100 writes to a stuck sink took %v", d)
	}
	if w.Dropped() < 80 {
		t.Errorf("dropped %d of 100 lines with room for 10 (plus one batch in flight)", w.Dropped())
	}
	close(sink.release)
	w.Close()
	if got := sink.lines + int(w.Dropped()); got != 100 {
		t.Errorf("%d written + %d dropped != 100", sink.lines, w.Dropped())
	}
}

// Steady state: buffering a line allocates nothing.
func TestAsyncWriterWriteDoesNotAllocate(t *testing.T) {
	w := gateway.NewAsyncWriter(io.Discard, 0)
	defer w.Close()
	line := []byte(`{"level":"INFO","msg":"request","path":"/api/v1/records"}` + "\n")
	for round := 0; round < 3; round++ { // grow both buffers
		for i := 0; i < 300; i++ {
			w.Write(line)
		}
		time.Sleep(2 * gateway.FlushInterval)
	}
	if n := testing.AllocsPerRun(100, func() { w.Write(line) }); n != 0 {
		t.Errorf("%v allocs per line", n)
	}
}

func TestAsyncWriterKeepsOrderAndBatches(t *testing.T) {
	var out syncBuffer
	w := gateway.NewAsyncWriter(&out, 4096)
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1000-int(w.Dropped()) || w.Dropped() != 0 {
		t.Fatalf("%d lines written, %d dropped", len(lines), w.Dropped())
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d = %q", i, l)
		}
	}
}

// TestContentCodingPassesThrough: the gateway neither asks a backend for
// a compression the client did not ask for nor undoes one it did.
func TestContentCodingPassesThrough(t *testing.T) {
	plain := []byte(strings.Repeat(`{"id":"rec1"}`, 64))
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Seen-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Write(plain)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(plain)
		zw.Close()
	}))
	t.Cleanup(b.Close)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc"}},
	})
	// Go's client would add Accept-Encoding itself; this one sends none.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	for _, tc := range []struct{ accept, wantCoding string }{{"", ""}, {"gzip", "gzip"}} {
		req, _ := http.NewRequest("GET", base+"/r", nil)
		if tc.accept != "" {
			req.Header.Set("Accept-Encoding", tc.accept)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Seen-Accept-Encoding"); got != tc.accept {
			t.Errorf("client Accept-Encoding %q: backend saw %q", tc.accept, got)
		}
		if got := resp.Header.Get("Content-Encoding"); got != tc.wantCoding {
			t.Errorf("client Accept-Encoding %q: Content-Encoding %q, want %q", tc.accept, got, tc.wantCoding)
		}
		if tc.wantCoding == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("gzip body: %v", err)
			}
			body, _ = io.ReadAll(zr)
		}
		if !bytes.Equal(body, plain) {
			t.Errorf("client Accept-Encoding %q: body differs from the backend's", tc.accept)
		}
	}
}
