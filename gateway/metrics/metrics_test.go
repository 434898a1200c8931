package metrics_test

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pyairtable/api-gateway/gateway/metrics"
)

// newMetrics returns Metrics on a fresh registry.
func newMetrics(t testing.TB, s metrics.Settings) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.NewWithSettings(reg, s)
	if err != nil {
		t.Fatalf("NewWithSettings() error = %v", err)
	}
	return m, reg
}

// scrape fetches h over real HTTP on loopback and parses the text format.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type = %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing scrape: %v", err)
	}
	return mfs
}

type labels map[string]string

func labelsOf(m *dto.Metric) labels {
	l := labels{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// series returns the metric of family name with exactly the labels want.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want labels) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("metric family %s missing from scrape", name)
	}
	for _, m := range mf.GetMetric() {
		if maps.Equal(labelsOf(m), want) {
			return m
		}
	}
	var have []labels
	for _, m := range mf.GetMetric() {
		have = append(have, labelsOf(m))
	}
	t.Fatalf("%s%v missing; have %v", name, want, have)
	return nil
}

func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, l labels) float64 {
	t.Helper()
	m := series(t, mfs, name, l)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	t.Fatalf("%s%v is not a counter or gauge", name, l)
	return 0
}

func seriesCount(mfs map[string]*dto.MetricFamily, name string) int {
	return len(mfs[name].GetMetric())
}

// checkNoLeak fails t if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var now int
		for range 100 {
			if now = runtime.NumGoroutine(); now <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("goroutines: %d before, %d after, want no leak", before, now)
	})
}

func TestScrape(t *testing.T) {
	checkNoLeak(t)
	m, reg := newMetrics(t, metrics.Settings{Version: "v1.2.3"})

	m.ObserveRequest("users", "users-svc", "GET", 200, 20*time.Millisecond, 0, 512)
	m.ObserveRequest("users", "users-svc", "GET", 204, 30*time.Millisecond, 0, 0)
	m.ObserveRequest("users", "users-svc", "GET", 299, 4*time.Second, 0, 2048)
	m.ObserveRequest("users", "users-svc", "PROPFIND", 503, time.Millisecond, -1, 100)
	m.ObserveRequest("orders", "orders-svc", "POST", 404, 2*time.Millisecond, 150, -1)
	m.ObserveRequest("orders", "orders-svc", "get", 0, 5*time.Millisecond, 10, 10)
	m.InFlight("users", 1)
	m.InFlight("users", 1)
	m.InFlight("users", -1)
	m.ObserveAttempt("users-svc", "10.0.0.1:8080", 200, 10*time.Millisecond)
	m.ObserveAttempt("users-svc", "10.0.0.1:8080", 0, 3*time.Second)
	m.ObserveAttempt("users-svc", "10.0.0.2:8080", 502, 40*time.Millisecond)
	m.Retry("users-svc", "transport")
	m.Retry("users-svc", "transport")
	m.Retry("users-svc", "status")
	m.BreakerState("users-svc", "10.0.0.1:8080", metrics.BreakerOpen)
	m.BreakerTransition("users-svc", "10.0.0.1:8080", "closed", "open")
	m.InstanceHealth("users-svc", "10.0.0.1:8080", false)
	m.InstanceHealth("users-svc", "10.0.0.2:8080", true)
	m.Ejection("users-svc", "10.0.0.1:8080")
	m.BalancerPick("users-svc", "10.0.0.1:8080")
	m.BalancerPick("users-svc", "10.0.0.1:8080")
	m.BalancerPick("users-svc", "10.0.0.2:8080")
	m.RateLimit("per-ip", true)
	m.RateLimit("per-ip", true)
	m.RateLimit("per-ip", false)
	m.RateLimitStoreError("redis")
	m.AuthFailure("expired")
	m.AuthFailure("expired")
	m.AuthFailure("signature")
	m.WebSocket(metrics.WSConnect, 3)
	m.WebSocket(metrics.WSDisconnect, 1)
	m.WebSocket(metrics.WSSubscribe, 5)
	m.WebSocket(metrics.WSSubscribe, -2)
	m.WebSocket(metrics.WSMessageIn, 7)
	m.WebSocket(metrics.WSMessageOut, 11)
	m.WebSocket(metrics.WSMessageOut, -4) // ignored: counters never go down
	m.WebSocket(metrics.WSDrop, 1)
	m.WebSocket("bogus", 100) // ignored
	okAt := time.Unix(1700000000, 500_000_000)
	m.ConfigReload(true, okAt)
	m.ConfigReload(false, okAt.Add(time.Minute))
	m.Mirror("users-svc", metrics.MirrorSent)
	m.Mirror("users-svc", metrics.MirrorMismatch)
	m.Mirror("users-svc", "surprise")

	mfs := scrape(t, m.Handler(reg))

	values := []struct {
		name string
		l    labels
		want float64
	}{
		{"gateway_requests_total", labels{"route": "users", "service": "users-svc", "method": "GET", "code": "2xx"}, 3},
		{"gateway_requests_total", labels{"route": "users", "service": "users-svc", "method": "other", "code": "5xx"}, 1},
		{"gateway_requests_total", labels{"route": "orders", "service": "orders-svc", "method": "POST", "code": "4xx"}, 1},
		{"gateway_requests_total", labels{"route": "orders", "service": "orders-svc", "method": "other", "code": "error"}, 1},
		{"gateway_requests_in_flight", labels{"route": "users"}, 1},
		{"gateway_upstream_attempts_total", labels{"service": "users-svc", "instance": "10.0.0.1:8080", "code": "2xx"}, 1},
		{"gateway_upstream_attempts_total", labels{"service": "users-svc", "instance": "10.0.0.1:8080", "code": "error"}, 1},
		{"gateway_upstream_attempts_total", labels{"service": "users-svc", "instance": "10.0.0.2:8080", "code": "5xx"}, 1},
		{"gateway_retries_total", labels{"service": "users-svc", "reason": "transport"}, 2},
		{"gateway_retries_total", labels{"service": "users-svc", "reason": "status"}, 1},
		{"gateway_breaker_state", labels{"service": "users-svc", "instance": "10.0.0.1:8080"}, 2},
		{"gateway_breaker_transitions_total", labels{"service": "users-svc", "instance": "10.0.0.1:8080", "from": "closed", "to": "open"}, 1},
		{"gateway_instance_healthy", labels{"service": "users-svc", "instance": "10.0.0.1:8080"}, 0},
		{"gateway_instance_healthy", labels{"service": "users-svc", "instance": "10.0.0.2:8080"}, 1},
		{"gateway_instance_ejections_total", labels{"service": "users-svc", "instance": "10.0.0.1:8080"}, 1},
		{"gateway_balancer_picks_total", labels{"service": "users-svc", "instance": "10.0.0.1:8080"}, 2},
		{"gateway_balancer_picks_total", labels{"service": "users-svc", "instance": "10.0.0.2:8080"}, 1},
		{"gateway_ratelimit_decisions_total", labels{"policy": "per-ip", "decision": "allowed"}, 2},
		{"gateway_ratelimit_decisions_total", labels{"policy": "per-ip", "decision": "limited"}, 1},
		{"gateway_ratelimit_store_errors_total", labels{"store": "redis"}, 1},
		{"gateway_auth_failures_total", labels{"reason": "expired"}, 2},
		{"gateway_auth_failures_total", labels{"reason": "signature"}, 1},
		{"gateway_websocket_connections", labels{}, 2},
		{"gateway_websocket_subscriptions", labels{}, 3},
		{"gateway_websocket_messages_total", labels{"direction": "in"}, 7},
		{"gateway_websocket_messages_total", labels{"direction": "out"}, 11},
		{"gateway_websocket_drops_total", labels{}, 1},
		{"gateway_config_reloads_total", labels{"result": "success"}, 1},
		{"gateway_config_reloads_total", labels{"result": "failure"}, 1},
		{"gateway_config_last_reload_success_timestamp_seconds", labels{}, 1700000000.5},
		{"gateway_config_last_reload_success", labels{}, 0},
		{"gateway_mirror_requests_total", labels{"service": "users-svc", "outcome": "sent"}, 1},
		{"gateway_mirror_requests_total", labels{"service": "users-svc", "outcome": "mismatch"}, 1},
		{"gateway_mirror_requests_total", labels{"service": "users-svc", "outcome": "other"}, 1},
		{"gateway_build_info", labels{"version": "v1.2.3", "goversion": runtime.Version()}, 1},
		{"gateway_metrics_label_overflow_total", labels{"metric": "gateway_requests_total"}, 0},
	}
	for _, v := range values {
		if got := value(t, mfs, v.name, v.l); got != v.want {
			t.Errorf("%s%v = %v, want %v", v.name, v.l, got, v.want)
		}
	}

	// Exactly these series exist: nothing created by accident.
	counts := map[string]int{
		"gateway_requests_total":               4,
		"gateway_request_duration_seconds":     4,
		"gateway_request_size_bytes":           2,
		"gateway_response_size_bytes":          2,
		"gateway_upstream_attempts_total":      3,
		"gateway_retries_total":                2,
		"gateway_websocket_messages_total":     2,
		"gateway_mirror_requests_total":        3,
		"gateway_config_reloads_total":         2,
		"gateway_ratelimit_decisions_total":    2,
		"gateway_ratelimit_store_errors_total": 1,
	}
	for name, want := range counts {
		if got := seriesCount(mfs, name); got != want {
			t.Errorf("%s has %d series, want %d", name, got, want)
		}
	}

	hists := []struct {
		name  string
		l     labels
		count uint64
		sum   float64
		le    float64 // a bucket bound to check
		inLe  uint64  // cumulative count at le
	}{
		{"gateway_request_duration_seconds", labels{"route": "users", "service": "users-svc", "method": "GET", "code": "2xx"}, 3, 4.05, 0.025, 1},
		{"gateway_request_duration_seconds", labels{"route": "orders", "service": "orders-svc", "method": "POST", "code": "4xx"}, 1, 0.002, 0.0025, 1},
		{"gateway_request_size_bytes", labels{"route": "users"}, 3, 0, 100, 3},      // the -1 is not recorded
		{"gateway_request_size_bytes", labels{"route": "orders"}, 2, 160, 100, 1},   // 150 and 10
		{"gateway_response_size_bytes", labels{"route": "users"}, 4, 2660, 1000, 3}, // 512, 0, 2048, 100
		{"gateway_response_size_bytes", labels{"route": "orders"}, 1, 10, 100, 1},
		{"gateway_upstream_attempt_duration_seconds", labels{"service": "users-svc", "instance": "10.0.0.1:8080", "code": "error"}, 1, 3, 2.5, 0},
	}
	for _, h := range hists {
		got := series(t, mfs, h.name, h.l).GetHistogram()
		if got.GetSampleCount() != h.count || math.Abs(got.GetSampleSum()-h.sum) > 1e-9 {
			t.Errorf("%s%v count, sum = %d, %v, want %d, %v", h.name, h.l, got.GetSampleCount(), got.GetSampleSum(), h.count, h.sum)
		}
		found := false
		for _, b := range got.GetBucket() {
			if b.GetUpperBound() == h.le {
				found = true
				if b.GetCumulativeCount() != h.inLe {
					t.Errorf("%s%v bucket le=%v = %d, want %d", h.name, h.l, h.le, b.GetCumulativeCount(), h.inLe)
				}
			}
		}
		if !found {
			t.Errorf("%s%v has no bucket le=%v", h.name, h.l, h.le)
		}
	}
	if n := len(series(t, mfs, "gateway_request_duration_seconds",
		labels{"route": "users", "service": "users-svc", "method": "GET", "code": "2xx"}).GetHistogram().GetBucket()); n != 14 {
		t.Errorf("request duration has %d buckets, want 13 + Inf", n)
	}

	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("runtime metric %s missing from scrape", name)
		}
	}
}

func TestLabelNames(t *testing.T) {
	m, reg := newMetrics(t, metrics.Settings{})
	m.ObserveRequest("r", "s", "GET", 200, time.Millisecond, 1, 1)
	m.ObserveAttempt("s", "i:1", 200, time.Millisecond)
	m.BreakerTransition("s", "i:1", "closed", "open")
	m.RateLimit("p", true)
	mfs := scrape(t, m.Handler(reg))
	want := map[string][]string{
		"gateway_requests_total":                    {"code", "method", "route", "service"},
		"gateway_request_duration_seconds":          {"code", "method", "route", "service"},
		"gateway_request_size_bytes":                {"route"},
		"gateway_upstream_attempt_duration_seconds": {"code", "instance", "service"},
		"gateway_breaker_transitions_total":         {"from", "instance", "service", "to"},
		"gateway_ratelimit_decisions_total":         {"decision", "policy"},
		"gateway_build_info":                        {"goversion", "version"},
	}
	for name, w := range want {
		for _, s := range mfs[name].GetMetric() {
			if got := slices.Sorted(maps.Keys(labelsOf(s))); !slices.Equal(got, w) {
				t.Errorf("%s labels = %v, want %v", name, got, w)
			}
		}
	}
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "gateway_") {
			continue
		}
		if mf.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s lacks the _total suffix", name)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
	}
}

func TestCardinalityBounded(t *testing.T) {
	const limit = 20
	m, reg := newMetrics(t, metrics.Settings{MaxSeries: limit})
	// A misbehaving caller passing raw paths, odd methods and statuses.
	methods := []string{"GET", "get", "PROPFIND", "BREW", "POST", "\xff"}
	for i := range 2000 {
		path := fmt.Sprintf("/users/%d", i)
		m.ObserveRequest(path, "svc", methods[i%len(methods)], i%1000, time.Millisecond, 1, 1)
		m.ObserveAttempt("svc", fmt.Sprintf("10.0.%d.%d:80", i/256, i%256), 200, time.Millisecond)
		m.AuthFailure(fmt.Sprintf("token %d invalid", i))
		m.InFlight(path, 0)
	}
	mfs := scrape(t, m.Handler(reg))

	codes := map[string]bool{"1xx": true, "2xx": true, "3xx": true, "4xx": true, "5xx": true, "other": true, "error": true}
	meths := map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true, "other": true}
	overflowRoutes := 0
	for _, s := range mfs["gateway_requests_total"].GetMetric() {
		l := labelsOf(s)
		if !codes[l["code"]] || !meths[l["method"]] {
			t.Errorf("requests_total series %v has a label value outside the fixed sets", l)
		}
		if l["route"] == "_overflow" {
			overflowRoutes++
		}
	}
	// limit own series plus at most one overflow series per (method, code).
	if n, max := seriesCount(mfs, "gateway_requests_total"), limit+len(meths)*len(codes); n > max || overflowRoutes == 0 {
		t.Errorf("requests_total has %d series (%d overflow), want <= %d with some overflow", n, overflowRoutes, max)
	}
	for _, name := range []string{"gateway_upstream_attempts_total", "gateway_auth_failures_total", "gateway_requests_in_flight"} {
		if n := seriesCount(mfs, name); n > limit+len(codes) {
			t.Errorf("%s has %d series, want <= %d", name, n, limit+len(codes))
		}
	}
	for _, name := range []string{"gateway_request_size_bytes", "gateway_response_size_bytes"} {
		if n := seriesCount(mfs, name); n > limit+1 {
			t.Errorf("%s has %d series, want <= %d", name, n, limit+1)
		}
	}
	// Every observation is still counted, under its own labels or _overflow.
	var total float64
	for _, s := range mfs["gateway_requests_total"].GetMetric() {
		total += s.GetCounter().GetValue()
	}
	if total != 2000 {
		t.Errorf("sum of requests_total = %v, want 2000", total)
	}
	if got := value(t, mfs, "gateway_metrics_label_overflow_total", labels{"metric": "gateway_auth_failures_total"}); got != 2000-limit {
		t.Errorf("auth failures overflow = %v, want %d", got, 2000-limit)
	}
	if got := value(t, mfs, "gateway_auth_failures_total", labels{"reason": "_overflow"}); got != 2000-limit {
		t.Errorf("auth_failures_total{reason=_overflow} = %v, want %d", got, 2000-limit)
	}
}

func TestInvalidUTF8(t *testing.T) {
	m, reg := newMetrics(t, metrics.Settings{})
	m.ObserveRequest("r\xff", "s", "GET", 200, time.Millisecond, 1, 1) // must not panic
	m.AuthFailure("\xfe")
	mfs := scrape(t, m.Handler(reg))
	if got := value(t, mfs, "gateway_requests_total", labels{"route": "r\uFFFD", "service": "s", "method": "GET", "code": "2xx"}); got != 1 {
		t.Errorf("requests_total for an invalid UTF-8 route = %v, want 1", got)
	}
}

func TestForget(t *testing.T) {
	m, reg := newMetrics(t, metrics.Settings{})
	for _, inst := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		m.ObserveAttempt("svc", inst, 200, time.Millisecond)
		m.ObserveAttempt("svc", inst, 0, time.Millisecond)
		m.BalancerPick("svc", inst)
		m.BreakerState("svc", inst, metrics.BreakerClosed)
		m.BreakerTransition("svc", inst, "open", "closed")
		m.InstanceHealth("svc", inst, true)
		m.Ejection("svc", inst)
	}
	m.ObserveAttempt("other", "10.0.0.1:80", 200, time.Millisecond) // same host, other service: kept
	m.Forget("svc", "10.0.0.1:80")

	mfs := scrape(t, m.Handler(reg))
	for _, name := range []string{
		"gateway_upstream_attempts_total", "gateway_upstream_attempt_duration_seconds", "gateway_balancer_picks_total",
		"gateway_breaker_state", "gateway_breaker_transitions_total", "gateway_instance_healthy", "gateway_instance_ejections_total",
	} {
		for _, s := range mfs[name].GetMetric() {
			if l := labelsOf(s); l["service"] == "svc" && l["instance"] == "10.0.0.1:80" {
				t.Errorf("%s%v still exported after Forget", name, l)
			}
		}
		if len(mfs[name].GetMetric()) == 0 {
			t.Errorf("%s lost the other instance's series", name)
		}
	}
	if got := value(t, mfs, "gateway_upstream_attempts_total", labels{"service": "other", "instance": "10.0.0.1:80", "code": "2xx"}); got != 1 {
		t.Errorf("other service's attempts = %v, want 1", got)
	}

	// The instance comes back: its series restart from zero and are exported,
	// i.e. the cache did not keep the deleted children.
	m.ObserveAttempt("svc", "10.0.0.1:80", 200, time.Millisecond)
	m.BalancerPick("svc", "10.0.0.1:80")
	mfs = scrape(t, m.Handler(reg))
	if got := value(t, mfs, "gateway_upstream_attempts_total", labels{"service": "svc", "instance": "10.0.0.1:80", "code": "2xx"}); got != 1 {
		t.Errorf("attempts after re-adding = %v, want 1", got)
	}
	if got := value(t, mfs, "gateway_balancer_picks_total", labels{"service": "svc", "instance": "10.0.0.1:80"}); got != 1 {
		t.Errorf("picks after re-adding = %v, want 1", got)
	}
}

func TestForgetRoute(t *testing.T) {
	m, reg := newMetrics(t, metrics.Settings{})
	m.InFlight("old", 1)
	m.ObserveRequest("old", "s", "GET", 200, time.Millisecond, 1, 1)
	m.ObserveRequest("new", "s", "GET", 200, time.Millisecond, 1, 1)
	m.ForgetRoute("old")
	m.InFlight("old", -1) // a request on the old route finishes after the reload

	mfs := scrape(t, m.Handler(reg))
	for _, name := range []string{"gateway_requests_total", "gateway_request_duration_seconds", "gateway_request_size_bytes", "gateway_response_size_bytes"} {
		for _, s := range mfs[name].GetMetric() {
			if l := labelsOf(s); l["route"] == "old" {
				t.Errorf("%s%v still exported after ForgetRoute", name, l)
			}
		}
		if n := seriesCount(mfs, name); n != 1 {
			t.Errorf("%s has %d series, want 1 (route new)", name, n)
		}
	}
	if got := value(t, mfs, "gateway_requests_in_flight", labels{"route": "old"}); got != 0 {
		t.Errorf("in flight on the forgotten route = %v, want 0 (never negative)", got)
	}
	m.ObserveRequest("old", "s", "GET", 200, time.Millisecond, 1, 1)
	mfs = scrape(t, m.Handler(reg))
	if got := value(t, mfs, "gateway_requests_total", labels{"route": "old", "service": "s", "method": "GET", "code": "2xx"}); got != 1 {
		t.Errorf("requests after the route returns = %v, want 1", got)
	}
}

func TestConcurrent(t *testing.T) {
	checkNoLeak(t)
	m, reg := newMetrics(t, metrics.Settings{})
	const workers, iters = 8, 500
	routes := []string{"a", "b", "c"}
	instances := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range iters {
				r, inst := routes[(w+i)%len(routes)], instances[i%len(instances)]
				m.InFlight(r, 1)
				m.ObserveRequest(r, "svc", "GET", 200+i%300, time.Duration(i)*time.Microsecond, int64(i), int64(i))
				m.BalancerPick("svc", inst)
				m.ObserveAttempt("svc", inst, 200, time.Millisecond)
				m.RateLimit("p", i%2 == 0)
				m.WebSocket(metrics.WSMessageIn, 1)
				if i%50 == 0 {
					m.Forget("svc", inst) // races with the attempts above
				}
				m.InFlight(r, -1)
			}
		})
	}
	// Scrape while the workers run.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			if _, err := reg.Gather(); err != nil {
				t.Errorf("Gather() error = %v", err)
			}
		}
	}()
	wg.Wait()
	<-done

	mfs := scrape(t, m.Handler(reg))
	var total float64
	for _, s := range mfs["gateway_requests_total"].GetMetric() {
		total += s.GetCounter().GetValue()
	}
	if total != workers*iters {
		t.Errorf("sum of requests_total = %v, want %d", total, workers*iters)
	}
	for _, r := range routes {
		if got := value(t, mfs, "gateway_requests_in_flight", labels{"route": r}); got != 0 {
			t.Errorf("in flight on %s = %v, want 0", r, got)
		}
	}
	if got := value(t, mfs, "gateway_websocket_messages_total", labels{"direction": "in"}); got != workers*iters {
		t.Errorf("websocket messages in = %v, want %d", got, workers*iters)
	}
	allowed := value(t, mfs, "gateway_ratelimit_decisions_total", labels{"policy": "p", "decision": "allowed"})
	limited := value(t, mfs, "gateway_ratelimit_decisions_total", labels{"policy": "p", "decision": "limited"})
	if allowed != workers*iters/2 || limited != workers*iters/2 {
		t.Errorf("ratelimit decisions = %v allowed, %v limited, want %d each", allowed, limited, workers*iters/2)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		s    metrics.Settings
		want error
	}{
		{"empty duration buckets", metrics.Settings{DurationBuckets: []float64{}}, metrics.ErrInvalidBuckets},
		{"decreasing", metrics.Settings{DurationBuckets: []float64{1, 0.5}}, metrics.ErrInvalidBuckets},
		{"repeated", metrics.Settings{SizeBuckets: []float64{1, 1}}, metrics.ErrInvalidBuckets},
		{"NaN", metrics.Settings{SizeBuckets: []float64{math.NaN()}}, metrics.ErrInvalidBuckets},
		{"+Inf", metrics.Settings{SizeBuckets: []float64{1, math.Inf(1)}}, metrics.ErrInvalidBuckets},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := metrics.NewWithSettings(prometheus.NewRegistry(), tt.s); !errors.Is(err, tt.want) {
				t.Errorf("NewWithSettings() error = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := metrics.New(nil); !errors.Is(err, metrics.ErrNilRegisterer) {
		t.Errorf("New(nil) error = %v, want %v", err, metrics.ErrNilRegisterer)
	}
}

func TestNewRollsBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	// A clash late in the registration order.
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_mirror_requests_total", Help: "clash"}))
	if _, err := metrics.New(reg); err == nil {
		t.Fatal("New() with a clashing metric succeeded, want an error")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "gateway_mirror_requests_total" {
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Errorf("registry after failed New holds %v, want only the clashing metric", names)
	}
	// Once the clash is gone, New works on the same registry.
	reg2 := prometheus.NewRegistry()
	if _, err := metrics.New(reg2); err != nil {
		t.Fatalf("New() error = %v", err)
	}
	if _, err := metrics.New(reg2); err == nil {
		t.Errorf("second New() on the same registry succeeded, want an error")
	}
}

func TestRuntimeCollectorsAlreadyRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if _, err := metrics.New(reg); err != nil {
		t.Fatalf("New() on a registry with runtime collectors: %v", err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather() error = %v", err)
	}
}

// brokenCollector fails every collection.
type brokenCollector struct{ desc *prometheus.Desc }

func (b brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }
func (b brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(b.desc, errors.New("backend down"))
}

func TestHandlerContinuesOnError(t *testing.T) {
	m, reg := newMetrics(t, metrics.Settings{})
	reg.MustRegister(brokenCollector{prometheus.NewDesc("broken_total", "fails", nil, nil)})
	m.AuthFailure("expired")
	h := m.Handler(reg)
	mfs := scrape(t, h) // scrape checks for 200
	if got := value(t, mfs, "gateway_auth_failures_total", labels{"reason": "expired"}); got != 1 {
		t.Errorf("auth failures = %v, want 1 despite a broken collector", got)
	}
	mfs = scrape(t, h)
	if got := value(t, mfs, "promhttp_metric_handler_errors_total", labels{"cause": "gathering"}); got < 1 {
		t.Errorf("promhttp_metric_handler_errors_total{cause=gathering} = %v, want >= 1", got)
	}
}

func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.InFlight("r", 1)
	m.ObserveRequest("r", "s", "GET", 200, time.Millisecond, 1, 1)
	m.ObserveAttempt("s", "i", 200, time.Millisecond)
	m.Retry("s", "x")
	m.BreakerState("s", "i", 2)
	m.BreakerTransition("s", "i", "a", "b")
	m.InstanceHealth("s", "i", true)
	m.Ejection("s", "i")
	m.BalancerPick("s", "i")
	m.RateLimit("p", true)
	m.RateLimitStoreError("redis")
	m.AuthFailure("x")
	m.WebSocket(metrics.WSConnect, 1)
	m.ConfigReload(true, time.Now())
	m.Mirror("s", metrics.MirrorSent)
	m.Forget("s", "i")
	m.ForgetRoute("r")
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
	if mfs := scrape(t, m.Handler(reg)); mfs["x_total"] == nil {
		t.Errorf("nil Metrics' Handler did not serve the gatherer")
	}
}

func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	m, _ := newMetrics(t, metrics.Settings{})
	tests := []struct {
		name string
		f    func()
	}{
		{"ObserveRequest", func() { m.ObserveRequest("users", "users-svc", "GET", 200, time.Millisecond, 10, 100) }},
		{"InFlight", func() { m.InFlight("users", 1) }},
		{"ObserveAttempt", func() { m.ObserveAttempt("users-svc", "10.0.0.1:80", 0, time.Millisecond) }},
		{"BalancerPick", func() { m.BalancerPick("users-svc", "10.0.0.1:80") }},
		{"Retry", func() { m.Retry("users-svc", "transport") }},
		{"RateLimit", func() { m.RateLimit("per-ip", false) }},
		{"RateLimitStoreError", func() { m.RateLimitStoreError("redis") }},
		{"AuthFailure", func() { m.AuthFailure("expired") }},
		{"Mirror", func() { m.Mirror("users-svc", metrics.MirrorSent) }},
		{"WebSocket", func() { m.WebSocket(metrics.WSMessageOut, 1) }},
	}
	for _, tt := range tests {
		tt.f() // warm the cache
		if n := testing.AllocsPerRun(200, tt.f); n != 0 {
			t.Errorf("%s allocs = %v, want 0", tt.name, n)
		}
	}
}
