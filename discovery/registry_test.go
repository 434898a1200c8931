package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const testKey = "s3cret-admin-key"

// fakeClock is a settable clock shared by a registry and its test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// call sends one request to h and returns the response.
func call(t *testing.T, h http.Handler, method, target, body string, hdr ...string) *http.Response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

const instances = "/registry/services/api/instances"

func authed(t *testing.T, h http.Handler, method, target, body string) *http.Response {
	t.Helper()
	return call(t, h, method, target, body, "X-Admin-Key", testKey)
}

type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// wantProblem checks that resp is an RFC 9457 problem with the status.
func wantProblem(t *testing.T, resp *http.Response, status int) problemDoc {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p problemDoc
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("problem body: %v", err)
	}
	if p.Status != status || p.Title != http.StatusText(status) || p.Type != "about:blank" || p.Detail == "" {
		t.Fatalf("problem = %+v, want status %d with title and detail", p, status)
	}
	return p
}

func listURLs(t *testing.T, h http.Handler) string {
	t.Helper()
	resp := authed(t, h, http.MethodGet, instances, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET status = %d, want 200", resp.StatusCode)
	}
	var views []registrationView
	if err := json.NewDecoder(resp.Body).Decode(&views); err != nil {
		t.Fatal(err)
	}
	s := make([]string, len(views))
	for i, v := range views {
		s[i] = v.URL
	}
	return strings.Join(s, " ")
}

func TestRegistryNoKeyDeniesEverything(t *testing.T) {
	r := NewRegistry(RegistrySettings{})
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		t.Run(m, func(t *testing.T) {
			// Even a caller who guesses "" or any key is refused.
			resp := call(t, r, m, instances, `{"url":"http://a"}`, "X-Admin-Key", "anything")
			wantProblem(t, resp, http.StatusForbidden)
		})
	}
	if got := listLen(r, "api"); got != 0 {
		t.Errorf("registrations = %d, want 0", got)
	}
}

func listLen(r *Registry, name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.services[name]; s != nil {
		return len(s.regs)
	}
	return 0
}

func TestRegistryAuth(t *testing.T) {
	r := NewRegistry(RegistrySettings{APIKey: testKey})
	tests := []struct {
		name   string
		hdr    []string
		status int
	}{
		{"no key", nil, http.StatusUnauthorized},
		{"wrong key", []string{"X-Admin-Key", "nope"}, http.StatusUnauthorized},
		{"prefix of key", []string{"X-Admin-Key", testKey[:len(testKey)-1]}, http.StatusUnauthorized},
		{"key plus suffix", []string{"X-Admin-Key", testKey + "x"}, http.StatusUnauthorized},
		{"wrong case", []string{"X-Admin-Key", strings.ToUpper(testKey)}, http.StatusUnauthorized},
		{"basic scheme", []string{"Authorization", "Basic " + testKey}, http.StatusUnauthorized},
		{"empty bearer", []string{"Authorization", "Bearer "}, http.StatusUnauthorized},
		{"header", []string{"X-Admin-Key", testKey}, http.StatusCreated},
		{"bearer", []string{"Authorization", "Bearer " + testKey}, http.StatusOK},
		{"bearer lower case", []string{"Authorization", "bearer " + testKey}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := call(t, r, http.MethodPost, instances, `{"url":"http://a"}`, tt.hdr...)
			if tt.status == http.StatusUnauthorized {
				wantProblem(t, resp, tt.status)
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				return
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

func TestRegistryRegisterHeartbeatExpire(t *testing.T) {
	clk := newClock()
	r := NewRegistry(RegistrySettings{APIKey: testKey, Now: clk.Now})

	resp := authed(t, r, http.MethodPost, instances, `{"url":"http://10.0.0.1:8080","weight":2,"ttl":"10s"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("first POST status = %d, want 201", resp.StatusCode)
	}
	var v registrationView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.URL != "http://10.0.0.1:8080" || v.Weight != 2 || v.TTL != "10s" || !v.Expires.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("registration = %+v, want url, weight 2, ttl 10s, expiry now+10s", v)
	}

	steps := []struct {
		advance   time.Duration
		heartbeat bool
		want      string
	}{
		{8 * time.Second, true, "http://10.0.0.1:8080"},  // heartbeat at 8s: expires at 18s
		{7 * time.Second, false, "http://10.0.0.1:8080"}, // 15s: alive thanks to the heartbeat
		{2*time.Second + 999*time.Millisecond, false, "http://10.0.0.1:8080"},
		{time.Millisecond, false, ""}, // 18s: lapsed
	}
	for i, s := range steps {
		clk.Add(s.advance)
		if s.heartbeat {
			resp := authed(t, r, http.MethodPost, instances, `{"url":"http://10.0.0.1:8080","weight":2,"ttl":"10s"}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("step %d: heartbeat status = %d, want 200", i, resp.StatusCode)
			}
		}
		if got := listURLs(t, r); got != s.want {
			t.Fatalf("step %d: list = %q, want %q", i, got, s.want)
		}
	}
	// Registering again after expiry is a new registration.
	if resp := authed(t, r, http.MethodPost, instances, `{"url":"http://10.0.0.1:8080"}`); resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST after expiry status = %d, want 201", resp.StatusCode)
	}
}

func TestRegistryTTL(t *testing.T) {
	r := NewRegistry(RegistrySettings{APIKey: testKey, DefaultTTL: 20 * time.Second, MaxTTL: time.Minute})
	tests := []struct {
		body string
		want string
	}{
		{`{"url":"http://a"}`, "20s"},
		{`{"url":"http://a","ttl":"45s"}`, "45s"},
		{`{"url":"http://a","ttl":"1h"}`, "1m0s"},
		{`{"url":"http://a","ttl":"1ms"}`, "1s"},
	}
	for _, tt := range tests {
		resp := authed(t, r, http.MethodPost, instances, tt.body)
		var v registrationView
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		if v.TTL != tt.want {
			t.Errorf("POST %s: ttl = %q, want %q", tt.body, v.TTL, tt.want)
		}
	}
}

func TestRegistryDelete(t *testing.T) {
	r := NewRegistry(RegistrySettings{APIKey: testKey})
	for _, u := range []string{"http://a:1", "http://b:1", "http://c:1"} {
		authed(t, r, http.MethodPost, instances, `{"url":"`+u+`"}`)
	}
	if resp := authed(t, r, http.MethodDelete, instances, `{"url":"http://b:1/"}`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE body status = %d, want 204", resp.StatusCode)
	}
	if resp := authed(t, r, http.MethodDelete, instances+"?url=http%3A%2F%2Fa%3A1", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE ?url status = %d, want 204", resp.StatusCode)
	}
	// Deregistering twice is harmless: shutdown hooks retry.
	if resp := authed(t, r, http.MethodDelete, instances+"?url=http://a:1", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("repeated DELETE status = %d, want 204", resp.StatusCode)
	}
	if got, want := listURLs(t, r), "http://c:1"; got != want {
		t.Fatalf("list = %q, want %q", got, want)
	}
}

func TestRegistryProblems(t *testing.T) {
	r := NewRegistry(RegistrySettings{APIKey: testKey})
	tests := []struct {
		name, method, target, body string
		status                     int
	}{
		{"unknown path", http.MethodGet, "/registry/other", "", http.StatusNotFound},
		{"no service", http.MethodGet, "/registry/services//instances", "", http.StatusNotFound},
		{"bad service name", http.MethodGet, "/registry/services/a%2Fb/instances", "", http.StatusNotFound},
		{"method", http.MethodPut, instances, "", http.StatusMethodNotAllowed},
		{"bad json", http.MethodPost, instances, `{"url":`, http.StatusBadRequest},
		{"unknown field", http.MethodPost, instances, `{"url":"http://a","port":1}`, http.StatusBadRequest},
		{"bad url", http.MethodPost, instances, `{"url":"a:1"}`, http.StatusBadRequest},
		{"bad ttl", http.MethodPost, instances, `{"url":"http://a","ttl":"soon"}`, http.StatusBadRequest},
		{"negative ttl", http.MethodPost, instances, `{"url":"http://a","ttl":"-1s"}`, http.StatusBadRequest},
		{"too large", http.MethodPost, instances, `{"url":"http://a","meta":{"x":"` + strings.Repeat("x", maxBody) + `"}}`, http.StatusBadRequest},
		{"delete without url", http.MethodDelete, instances, `{}`, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := authed(t, r, tt.method, tt.target, tt.body)
			wantProblem(t, resp, tt.status)
			if tt.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
	if got := listURLs(t, r); got != "" {
		t.Errorf("list after bad requests = %q, want empty", got)
	}
}

func TestRegistryOverHTTP(t *testing.T) {
	leakCheck(t)
	r := NewRegistry(RegistrySettings{APIKey: testKey})
	mux := http.NewServeMux()
	mux.Handle("/registry/", r)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)

	do := func(method, path, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(http.MethodPost, instances, `{"url":"http://10.1.0.1:80"}`); got != http.StatusCreated {
		t.Fatalf("POST = %d, want 201", got)
	}
	if got := do(http.MethodPost, instances, `{"url":"http://10.1.0.1:80"}`); got != http.StatusOK {
		t.Fatalf("heartbeat POST = %d, want 200", got)
	}
	if got := do(http.MethodGet, instances, ""); got != http.StatusOK {
		t.Fatalf("GET = %d, want 200", got)
	}
	if got := do(http.MethodDelete, instances, `{"url":"http://10.1.0.1:80"}`); got != http.StatusNoContent {
		t.Fatalf("DELETE = %d, want 204", got)
	}
	if got := listURLs(t, r); got != "" {
		t.Fatalf("list = %q, want empty", got)
	}
}

func TestRegistrySource(t *testing.T) {
	leakCheck(t)
	clk := newClock()
	r := NewRegistry(RegistrySettings{APIKey: testKey, Now: clk.Now, DefaultTTL: 10 * time.Second})
	ch1 := watch(t, r.Source("api"))
	ch2 := watch(t, r.Source("api"))
	other := watch(t, r.Source("other"))

	for _, ch := range []<-chan []Endpoint{ch1, ch2, other} {
		if got := recv(t, ch); len(got) != 0 {
			t.Fatalf("first set = %v, want empty", got)
		}
	}

	authed(t, r, http.MethodPost, instances, `{"url":"http://b:1"}`)
	recvWant(t, ch1, []Endpoint{{URL: "http://b:1", Weight: 1}})
	authed(t, r, http.MethodPost, instances, `{"url":"http://a:1","meta":{"v":"2"}}`)
	want := []Endpoint{{URL: "http://a:1", Weight: 1, Meta: map[string]string{"v": "2"}}, {URL: "http://b:1", Weight: 1}}
	recvWant(t, ch1, want)
	recvWant(t, ch2, want)

	// A heartbeat that changes nothing sends nothing; a weight change does.
	clk.Add(5 * time.Second)
	authed(t, r, http.MethodPost, instances, `{"url":"http://b:1"}`)
	noRecv(t, ch1, 30*time.Millisecond)
	authed(t, r, http.MethodPost, instances, `{"url":"http://b:1","weight":4}`)
	recvWant(t, ch1, []Endpoint{{URL: "http://a:1", Weight: 1, Meta: map[string]string{"v": "2"}}, {URL: "http://b:1", Weight: 4}})

	// a:1 was registered at 0s, b:1 refreshed at 5s.
	clk.Add(5 * time.Second)
	if n := r.Expire(clk.Now()); n != 1 {
		t.Fatalf("Expire() = %d, want 1", n)
	}
	recvWant(t, ch1, []Endpoint{{URL: "http://b:1", Weight: 4}})
	recvWant(t, ch2, []Endpoint{{URL: "http://b:1", Weight: 4}})
	noRecv(t, other, 30*time.Millisecond)
}

func TestRegistryRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(RegistrySettings{APIKey: testKey, DefaultTTL: 30 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		authed(t, r, http.MethodPost, instances, `{"url":"http://a:1"}`)
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if got := listLen(r, "api"); got != 1 {
			t.Fatalf("registrations at 29s = %d, want 1", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := listLen(r, "api"); got != 0 {
			t.Fatalf("registrations at 30s = %d, want 0", got)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want context.Canceled", err)
		}
	})
}
