package gateway_test

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/gateway/metrics"
	"github.com/pyairtable/api-gateway/ratelimit"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
)

var smallJSON = []byte(`{"id":"rec123","fields":{"name":"Ada","email":"ada@example.com","active":true},"createdTime":"2026"}` + "\n")

// benchBackend is a real backend on loopback answering a 100-byte JSON body.
func benchBackend(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(smallJSON)
	}))
	b.Cleanup(srv.Close)
	return srv
}

type pool32k struct{ ch chan []byte }

func (p pool32k) Get() []byte {
	select {
	case b := <-p.ch:
		return b
	default:
		return make([]byte, 32<<10)
	}
}
func (p pool32k) Put(b []byte) {
	select {
	case p.ch <- b:
	default:
	}
}

// benchTarget is one handler the proxy benchmarks compare.
type benchTarget struct {
	name string
	h    http.Handler
	gw   *gateway.Gateway // nil for the bare ReverseProxy
}

// benchTargets builds the handlers BenchmarkProxy and BenchmarkServe
// compare, all calling the same real backend: a bare
// httputil.ReverseProxy with the harness minproxy's Transport; the gateway
// as configured by default (routing, proxying, ids, trace context,
// security headers, breakers); the gateway with its observability chain
// (Prometheus metrics, JSON access log through the async writer); and the
// full chain: JWT auth (cached verify), per-IP rate limit (not hit),
// metrics, access log. It also returns the bearer token the full chain
// accepts.
func benchTargets(b *testing.B) ([]benchTarget, string) {
	backend := benchBackend(b)
	target, _ := url.Parse(backend.URL)
	// The Transport of the harness's minproxy (../shared/bench), the bare
	// proxy every ratio is quoted against.
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8192,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
	b.Cleanup(tr.CloseIdleConnections)
	bare := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: pool32k{make(chan []byte, 1024)},
	}
	g, err := gateway.New(gateway.Config{
		Services:  []gateway.Service{{Name: "records", Instances: []*balancer.Instance{balancer.MustInstance(backend.URL, 1)}}},
		Routes:    benchRoutesExternal("records"),
		Transport: gateway.TransportSettings{MaxIdleConnsPerHost: 1000},
		Logger:    slog.New(slog.DiscardHandler),
		Server:    gateway.ServerSettings{ShutdownDelay: -1},
	})
	if err != nil {
		b.Fatal(err)
	}
	m, _ := metrics.New(prometheus.NewRegistry())
	m2, _ := metrics.New(prometheus.NewRegistry())
	secret := []byte("bench-secret-0123456789abcdef-0123456789")
	jwtAuth, _ := authn.NewJWT(authn.JWTSettings{Secret: secret})
	token, _ := authn.MintHS256(secret, authn.MintClaims{Subject: "bench", TTL: time.Hour})
	limiter, _ := ratelimit.NewSlidingWindow(ratelimit.Settings{Limit: 1 << 30, Window: time.Second})
	logOut := gateway.NewAsyncWriter(io.Discard, 0)
	b.Cleanup(func() { logOut.Close() })
	routes := benchRoutesExternal("records")
	for i := range routes {
		routes[i].Public = false
	}
	full, err := gateway.New(gateway.Config{
		Services:   []gateway.Service{{Name: "records", Instances: []*balancer.Instance{balancer.MustInstance(backend.URL, 1)}}},
		Routes:     routes,
		Transport:  gateway.TransportSettings{MaxIdleConnsPerHost: 1000},
		Logger:     slog.New(slog.DiscardHandler),
		Auth:       jwtAuth,
		RateLimits: []gateway.RateLimitPolicy{{Name: "per_ip", Limiter: limiter, Key: gateway.KeyIP, Limit: 1 << 30, Window: time.Second}},
		Metrics:    m,
		AccessLog:  gateway.NewAccessLog(logOut, "json"),
		Server:     gateway.ServerSettings{ShutdownDelay: -1},
	})
	if err != nil {
		b.Fatal(err)
	}
	// The observability chain alone (issue #8's benchmark): metrics, JSON
	// access log through the async writer, trace context.
	observed, err := gateway.New(gateway.Config{
		Services:  []gateway.Service{{Name: "records", Instances: []*balancer.Instance{balancer.MustInstance(backend.URL, 1)}}},
		Routes:    benchRoutesExternal("records"),
		Transport: gateway.TransportSettings{MaxIdleConnsPerHost: 1000},
		Logger:    slog.New(slog.DiscardHandler),
		Metrics:   m2,
		AccessLog: gateway.NewAccessLog(logOut, "json"),
		Server:    gateway.ServerSettings{ShutdownDelay: -1},
	})
	if err != nil {
		b.Fatal(err)
	}
	return []benchTarget{{"bare", bare, nil}, {"gateway", g, g}, {"gateway_observed", observed, observed}, {"gateway_full_chain", full, full}}, token
}

// BenchmarkProxy compares the gateway with a bare, tuned
// httputil.ReverseProxy in the same run, both calling a real backend over
// loopback, handler to handler (no client connection). Run with -benchmem;
// the ratio of ns/op is the figure to quote.
func BenchmarkProxy(b *testing.B) {
	targets, token := benchTargets(b)
	for _, c := range targets {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest("GET", "http://api.example.com/api/v1/records/rec123?view=grid", nil)
					req.RemoteAddr = "192.0.2.10:51234"
					req.Header.Set("Authorization", "Bearer "+token)
					w := &nopWriter{h: http.Header{}}
					c.h.ServeHTTP(w, req)
					if w.code != 200 {
						b.Fatalf("status %d", w.code)
					}
				}
			})
		})
	}
}

// BenchmarkServe is BenchmarkProxy through real servers: keep-alive
// clients on loopback, the bare proxy behind a plain http.Server, the
// gateways behind their own Serve (connection guard, limits, timeouts).
// It counts what the handler benchmark cannot: reading the request and
// writing the response headers. ns/op and allocs/op include the client
// and the backend, the same in every target.
func BenchmarkServe(b *testing.B) {
	targets, token := benchTargets(b)
	for _, c := range targets {
		b.Run(c.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			if c.gw != nil {
				go func() { done <- c.gw.Serve(ctx, ln) }()
			} else {
				srv := &http.Server{Handler: c.h, ReadHeaderTimeout: 10 * time.Second}
				go func() { done <- srv.Serve(ln) }()
				go func() { <-ctx.Done(); srv.Close() }()
			}
			client := &http.Transport{MaxIdleConnsPerHost: 1000}
			defer func() {
				client.CloseIdleConnections()
				cancel()
				<-done
			}()
			url := "http://" + ln.Addr().String() + "/api/v1/records/rec123?view=grid"
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				for pb.Next() {
					resp, err := client.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return len(p), nil
}
func (w *nopWriter) WriteHeader(code int) { w.code = code }

var _ io.Writer = (*nopWriter)(nil)

func benchRoutesExternal(svc string) []gateway.Route {
	var rs []gateway.Route
	for _, p := range []string{"auth", "users", "workspaces", "bases", "tables", "views", "records", "fields", "formulas", "llm", "files", "airtable", "analytics", "workflows"} {
		rs = append(rs, gateway.Route{Name: p, Prefix: "/api/v1/" + p, Service: svc, Public: true})
	}
	return append(rs, gateway.Route{Name: "users-list", Path: "/api/v1/users", Methods: []string{"GET"}, Service: svc, Public: true})
}
