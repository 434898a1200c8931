// Package gatewaytest provides real upstreams for tests of gateways and of
// code behind them: an echo backend that reports what it received, and
// fault-injecting backends (latency, status codes, resets, hangs).
//
// Everything here listens on 127.0.0.1 only.
package gatewaytest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Echo is the JSON document an echo backend answers with.
type Echo struct {
	Service string              `json:"service"`
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	RawPath string              `json:"raw_path,omitempty"`
	Query   string              `json:"query,omitempty"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
}

// EchoHandler answers every request with an Echo describing it, as JSON.
// service names the backend in the answer.
func EchoHandler(service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echoOf(service, r))
	})
}

// echoOf describes r as the echo backend named service answers it.
func echoOf(service string, r *http.Request) Echo {
	return Echo{
		Service: service,
		Method:  r.Method,
		Path:    r.URL.Path,
		RawPath: r.URL.RawPath,
		Query:   r.URL.RawQuery,
		Host:    r.Host,
		Headers: r.Header,
	}
}

// Backend is a real HTTP server on 127.0.0.1 that counts requests and
// records the last few it saw.
type Backend struct {
	*httptest.Server
	Name string

	hits    atomic.Int64
	handler atomic.Pointer[http.Handler]
	mu      sync.Mutex
	last    []*http.Request
}

// NewBackend starts a backend serving h (EchoHandler(name) when h is nil)
// and closes it when the test ends.
func NewBackend(t testing.TB, name string, h http.Handler) *Backend {
	t.Helper()
	if h == nil {
		h = EchoHandler(name)
	}
	b := &Backend{Name: name}
	b.handler.Store(&h)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		c := r.Clone(r.Context())
		c.Body = nil
		b.last = append(b.last, c)
		if len(b.last) > 16 {
			b.last = b.last[1:]
		}
		b.mu.Unlock()
		(*b.handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

// SetHandler replaces the backend's behaviour while it runs.
func (b *Backend) SetHandler(h http.Handler) { b.handler.Store(&h) }

// Hits returns how many requests the backend received.
func (b *Backend) Hits() int64 { return b.hits.Load() }

// Last returns the most recent request the backend received (nil if none).
func (b *Backend) Last() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.last) == 0 {
		return nil
	}
	return b.last[len(b.last)-1]
}

// HeaderNames lists the header names of r, sorted, for assertions.
func HeaderNames(r *http.Request) []string {
	var ns []string
	for k := range r.Header {
		ns = append(ns, strings.ToLower(k))
	}
	sort.Strings(ns)
	return ns
}

// Demo starts an echo backend for each service on the given addresses
// (service name → host:port) and returns a function that stops them all.
// The api-gateway binary's -demo flag uses it so that the default
// configuration answers at once.
func Demo(addrs map[string][]string) (stop func(), err error) {
	var servers []*http.Server
	stop = func() {
		for _, s := range servers {
			s.Close()
		}
	}
	names := make([]string, 0, len(addrs))
	for n := range addrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, addr := range addrs[name] {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				stop()
				return nil, fmt.Errorf("demo backend %s: %w", name, err)
			}
			s := &http.Server{Handler: EchoHandler(name), ReadHeaderTimeout: 10 * time.Second}
			servers = append(servers, s)
			go s.Serve(ln)
		}
	}
	return stop, nil
}

// LastEcho decodes what the backend's echo handler would have answered for
// the last request it received (its headers, path and query).
func (b *Backend) LastEcho(t testing.TB) Echo {
	t.Helper()
	r := b.Last()
	if r == nil {
		t.Fatal("the backend received no request")
	}
	return echoOf(b.Name, r)
}
