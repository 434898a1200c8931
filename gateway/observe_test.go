package gateway_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
	"github.com/pyairtable/api-gateway/gateway/metrics"
	"github.com/pyairtable/api-gateway/gateway/tracecontext"
)

// syncBuffer is a log sink safe for the gateway's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type spanSink struct {
	mu    sync.Mutex
	spans []tracecontext.Span
}

func (s *spanSink) ExportSpan(sp *tracecontext.Span) {
	s.mu.Lock()
	s.spans = append(s.spans, *sp.Clone())
	s.mu.Unlock()
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetricsLogsAndTraces(t *testing.T) {
	var failing atomic.Int32
	ok := gatewaytest.NewBackend(t, "ok", nil)
	bad := gatewaytest.NewBackend(t, "bad", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		failing.Add(1)
	}))
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	spans := &spanSink{}
	limiter := memLimiter(t, 3, time.Minute)
	secret := []byte(testSecret)
	jwtAuth, _ := authn.NewJWT(authn.JWTSettings{Secret: secret})
	g, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{
			{Name: "ok", Instances: []*balancer.Instance{inst(t, ok.URL)}},
			{Name: "dead", Instances: []*balancer.Instance{inst(t, deadURL(t))}},
			{Name: "bad", Instances: []*balancer.Instance{inst(t, bad.URL)}, RetryCount: -1,
				CircuitBreaker: gateway.BreakerPolicy{Settings: breaker.Settings{ConsecutiveFailures: 2, OpenTimeout: time.Minute}},
				Outlier:        gateway.OutlierPolicy{Disabled: true}},
		},
		Routes: []gateway.Route{
			{Name: "ok", Prefix: "/ok", Service: "ok"},
			{Name: "dead", Prefix: "/dead", Service: "dead", Public: true},
			{Name: "bad", Prefix: "/bad", Service: "bad", Public: true},
			{Name: "limited", Prefix: "/limited", Service: "ok", Public: true,
				RateLimits: []gateway.RateLimitPolicy{{Name: "route:limited", Limiter: limiter, Key: gateway.KeyIP, Limit: 3, Window: time.Minute}}},
		},
		Auth:           jwtAuth,
		Metrics:        m,
		MetricsHandler: m.Handler(reg),
		AccessLog:      gateway.NewAccessLog(logs, "json"),
		TraceExporter:  spans,
	})
	_ = g
	tok, _ := authn.MintHS256(secret, authn.MintClaims{Subject: "u1", TTL: time.Hour})
	authGet := func(path string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var resp *http.Response
	for i := 0; i < 3; i++ {
		resp = authGet("/ok/items?token=secret-query", map[string]string{"traceparent": incoming})
	}
	upstreamTP := http.Header(ok.LastEcho(t).Headers).Get("Traceparent")
	authGet("/missing", nil) // 404
	authGet("/dead", nil)    // 502
	for i := 0; i < 4; i++ { // 500, 500, then the breaker is open: 503, 503
		authGet("/bad", nil)
	}
	for i := 0; i < 5; i++ { // 3 allowed, 2 limited
		authGet("/limited", nil)
	}
	req, _ := http.NewRequest("GET", base+"/ok/x", nil)
	req.Header.Set("Authorization", "Bearer garbage.token.here")
	r2, _ := http.DefaultClient.Do(req) // 401
	r2.Body.Close()

	// Trace context: the trace id is kept, the gateway adds its own span.
	tp, okp := tracecontext.Parse(resp.Header.Get("Traceparent"))
	if !okp || tp.TraceID.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || tp.ParentID.String() == "00f067aa0ba902b7" {
		t.Errorf("response traceparent = %q", resp.Header.Get("Traceparent"))
	}
	seen := upstreamTP
	up, _ := tracecontext.Parse(seen)
	if up.TraceID != tp.TraceID || up.ParentID != tp.ParentID || seen == incoming {
		t.Errorf("upstream traceparent %q: want the same trace with the gateway's span as parent", seen)
	}

	fams := scrape(t, base+"/metrics")
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gateway_requests_total", map[string]string{"route": "ok", "service": "ok", "code": "2xx"}, 3},
		{"gateway_requests_total", map[string]string{"route": "none", "code": "4xx"}, 1},
		{"gateway_requests_total", map[string]string{"route": "dead", "code": "5xx"}, 1},
		{"gateway_requests_total", map[string]string{"route": "bad", "code": "5xx"}, 4},
		{"gateway_requests_total", map[string]string{"route": "limited", "code": "2xx"}, 3},
		{"gateway_requests_total", map[string]string{"route": "limited", "code": "4xx"}, 2},
		{"gateway_requests_total", map[string]string{"route": "ok", "code": "4xx"}, 1},
		{"gateway_request_duration_seconds", map[string]string{"route": "ok", "code": "2xx"}, 3},
		{"gateway_upstream_attempts_total", map[string]string{"service": "bad", "code": "5xx"}, 2},
		{"gateway_breaker_state", map[string]string{"service": "bad"}, 2},
		{"gateway_breaker_transitions_total", map[string]string{"service": "bad", "to": "open"}, 1},
		{"gateway_ratelimit_decisions_total", map[string]string{"policy": "route:limited", "decision": "limited"}, 2},
		{"gateway_ratelimit_decisions_total", map[string]string{"policy": "route:limited", "decision": "allowed"}, 3},
		{"gateway_auth_failures_total", map[string]string{"reason": "malformed"}, 1},
	}
	for _, c := range checks {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if failing.Load() != 2 {
		t.Errorf("the failing backend got %d requests; the open breaker should have stopped it at 2", failing.Load())
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Error("runtime and process collectors missing")
	}

	// Access log: one JSON line per request, the documented fields, no
	// secret anywhere.
	out := logs.String()
	if strings.Contains(out, tok) || strings.Contains(out, "secret-query") || strings.Contains(out, "garbage.token") {
		t.Error("the access log contains a token or a query string")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 15 {
		t.Errorf("%d log lines for 15 requests", len(lines))
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, lines[0])
	}
	for _, k := range []string{"level", "time", "msg", "service", "instance", "route", "method", "path", "status", "duration", "duration_ms", "bytes", "client_ip", "request_id", "trace_id"} {
		if _, ok := first[k]; !ok {
			t.Errorf("log line lacks %q: %s", k, lines[0])
		}
	}
	if first["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || first["path"] != "/ok/items" || first["status"] != float64(200) || first["route"] != "ok" {
		t.Errorf("log line = %v", first)
	}

	spans.mu.Lock()
	n := len(spans.spans)
	spans.mu.Unlock()
	if n != 15 {
		t.Errorf("%d spans exported for 15 requests", n)
	}
}

func TestMalformedTraceparentIsReplaced(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc"}},
	})
	for _, bad := range []string{"garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"} {
		req, _ := http.NewRequest("GET", base+"/x", nil)
		req.Header.Set("traceparent", bad)
		res := do(t, req)
		got := http.Header(res.echo.Headers).Get("Traceparent")
		tc, ok := tracecontext.Parse(got)
		if !ok || got == bad || strings.Contains(strings.ToLower(bad), tc.TraceID.String()) {
			t.Errorf("traceparent %q upstream as %q, want a fresh valid trace", bad, got)
		}
	}
}
