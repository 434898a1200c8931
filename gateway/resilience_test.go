package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// statusBackend answers with whatever status code is currently set.
func statusBackend(t *testing.T, name string, code *atomic.Int32) *gatewaytest.Backend {
	return gatewaytest.NewBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
		io.WriteString(w, name)
	}))
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestBreakerTripsProbesAndCloses(t *testing.T) {
	var code atomic.Int32
	code.Store(500)
	b := statusBackend(t, "flaky", &code)
	const probes = 2
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{
			Name:       "flaky",
			Instances:  []*balancer.Instance{inst(t, b.URL)},
			RetryCount: -1,
			Outlier:    gateway.OutlierPolicy{Disabled: true},
			CircuitBreaker: gateway.BreakerPolicy{Settings: breaker.Settings{
				ConsecutiveFailures: 5, OpenTimeout: 300 * time.Millisecond, HalfOpenRequests: probes,
			}},
		}},
		Routes: []gateway.Route{{Prefix: "/", Service: "flaky"}},
	})
	for i := 0; i < 5; i++ {
		if s := getStatus(t, base+"/x"); s != 500 {
			t.Fatalf("request %d: status %d, want the backend's 500", i, s)
		}
	}
	// Open: the backend receives nothing, clients get 503 with Retry-After.
	hits := b.Hits()
	for i := 0; i < 20; i++ {
		res := get(t, base+"/x")
		if res.status != 503 || res.header.Get("Retry-After") == "" {
			t.Fatalf("while open: status %d Retry-After %q, want 503 with Retry-After", res.status, res.header.Get("Retry-After"))
		}
	}
	if b.Hits() != hits {
		t.Fatalf("backend got %d requests while the breaker was open, want 0", b.Hits()-hits)
	}
	// After the open timeout exactly `probes` requests reach it; slow
	// probes keep their slots so concurrent requests cannot sneak past.
	time.Sleep(350 * time.Millisecond)
	code.Store(200)
	release := make(chan struct{})
	var probeHits atomic.Int32
	b.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probeHits.Add(1)
		<-release
		w.WriteHeader(200)
	}))
	var wg sync.WaitGroup
	statuses := make(chan int, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- getStatus(t, base+"/x")
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if n := probeHits.Load(); n != probes {
		t.Errorf("half-open: %d requests reached the backend, want exactly %d probes", n, probes)
	}
	close(release)
	wg.Wait()
	close(statuses)
	ok := 0
	for s := range statuses {
		if s == 200 {
			ok++
		}
	}
	if ok != probes {
		t.Errorf("%d requests succeeded in half-open, want %d (the rest 503)", ok, probes)
	}
	// The probes succeeded: closed again, traffic flows.
	for i := 0; i < 5; i++ {
		if s := getStatus(t, base+"/x"); s != 200 {
			t.Fatalf("after close: status %d", s)
		}
	}
}

func TestSlowBackendGets504WithinTimeout(t *testing.T) {
	b := gatewaytest.NewBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}))
	const timeout = 200 * time.Millisecond
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "slow", Timeout: timeout, Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "slow"}},
	})
	for i := 0; i < 3; i++ {
		start := time.Now()
		res := get(t, base+"/x")
		el := time.Since(start)
		checkProblem(t, res, 504, "backend-timeout")
		if el > timeout+50*time.Millisecond {
			t.Errorf("504 after %v, want within timeout + 50ms (%v)", el, timeout+50*time.Millisecond)
		}
	}
}

func TestRetriesLandOnAnotherInstance(t *testing.T) {
	var bad, good atomic.Int32
	bad.Store(503)
	good.Store(200)
	b1 := statusBackend(t, "bad", &bad)
	b2 := statusBackend(t, "good", &good)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{
			Name: "svc", Instances: []*balancer.Instance{inst(t, b1.URL), inst(t, b2.URL)},
			RetryCount: 1, Outlier: gateway.OutlierPolicy{Disabled: true},
			CircuitBreaker: gateway.BreakerPolicy{Disabled: true},
			Retry:          gateway.RetryPolicy{MinPerSecond: 100},
		}},
		Routes: []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	for i := 0; i < 20; i++ {
		if s := getStatus(t, base+"/x"); s != 200 {
			t.Fatalf("GET %d = %d, want 200 after retrying on the good instance", i, s)
		}
	}
	// Every request ended on the good instance; every one that tried the
	// bad instance first was retried there, never on the bad one again.
	if b2.Hits() != 20 || b1.Hits() == 0 || b1.Hits() > 20 {
		t.Errorf("hits bad=%d good=%d, want good=20 and 1..20 first tries on bad", b1.Hits(), b2.Hits())
	}
	// A PUT body is replayed to the second instance intact.
	req, _ := http.NewRequest("PUT", base+"/x", strings.NewReader("payload-123"))
	good.Store(200)
	b2.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, string(body))
	}))
	for i := 0; i < 2; i++ {
		resp, err := http.DefaultClient.Do(req.Clone(req.Context()))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		req.Body = io.NopCloser(strings.NewReader("payload-123"))
		if resp.StatusCode != 200 || string(body) != "payload-123" {
			t.Errorf("PUT retried: %d %q, want the body replayed", resp.StatusCode, body)
		}
	}
}

func TestPostIsNeverSentTwiceOnceDelivered(t *testing.T) {
	var bad atomic.Int32
	bad.Store(502)
	b1 := statusBackend(t, "a", &bad)
	b2 := statusBackend(t, "b", &bad)
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{
			Name: "svc", Instances: []*balancer.Instance{inst(t, b1.URL), inst(t, b2.URL)},
			RetryCount: 3, Outlier: gateway.OutlierPolicy{Disabled: true},
			CircuitBreaker: gateway.BreakerPolicy{Disabled: true},
			Retry:          gateway.RetryPolicy{MinPerSecond: 1000},
		}},
		Routes: []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	for i := 0; i < 10; i++ {
		resp, err := http.Post(base+"/orders", "application/json", strings.NewReader(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Errorf("POST = %d, want the backend's 502 passed through", resp.StatusCode)
		}
	}
	if got := b1.Hits() + b2.Hits(); got != 10 {
		t.Errorf("backends saw %d POSTs for 10 client POSTs; a delivered POST must not be re-sent", got)
	}
	// With an Idempotency-Key it may be retried.
	req, _ := http.NewRequest("POST", base+"/orders", strings.NewReader(`{"n":1}`))
	req.Header.Set("Idempotency-Key", "k-1")
	before := b1.Hits() + b2.Hits()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := b1.Hits() + b2.Hits() - before; got != 2 {
		t.Errorf("POST with Idempotency-Key reached backends %d times, want 2 (one retry on the other instance)", got)
	}
}

func TestRetryBudgetHoldsDuringOutage(t *testing.T) {
	var down atomic.Int32
	down.Store(503)
	var backends []*gatewaytest.Backend
	var instances []*balancer.Instance
	for i := 0; i < 4; i++ {
		b := statusBackend(t, fmt.Sprint("b", i), &down)
		backends = append(backends, b)
		instances = append(instances, inst(t, b.URL))
	}
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{
			Name: "svc", Instances: instances, RetryCount: 3,
			Outlier:        gateway.OutlierPolicy{Disabled: true},
			CircuitBreaker: gateway.BreakerPolicy{Disabled: true},
			Retry:          gateway.RetryPolicy{Budget: 0.2, MinPerSecond: 1, BackoffBase: time.Millisecond, BackoffMax: time.Millisecond},
		}},
		Routes: []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	const n = 400
	for i := 0; i < n; i++ {
		getStatus(t, base+"/x")
	}
	var total int64
	for _, b := range backends {
		total += b.Hits()
	}
	if float64(total) > 1.25*n {
		t.Errorf("backends saw %d requests for %d client requests during a total outage; budget should hold it <= 1.25x", total, n)
	}
	if total <= n {
		t.Errorf("backends saw %d requests: no retries at all, budget too strict", total)
	}
}

func TestPassiveEjectionOfFailingInstance(t *testing.T) {
	var bad, good atomic.Int32
	bad.Store(500)
	good.Store(200)
	b1 := statusBackend(t, "bad", &bad)
	b2 := statusBackend(t, "good", &good)
	b3 := statusBackend(t, "good2", &good)
	badIn := inst(t, b1.URL)
	g, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{
			Name: "svc", Instances: []*balancer.Instance{badIn, inst(t, b2.URL), inst(t, b3.URL)},
			RetryCount:     -1,
			CircuitBreaker: gateway.BreakerPolicy{Disabled: true},
		}},
		Routes: []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
	})
	for i := 0; i < 30; i++ {
		getStatus(t, base+"/x")
	}
	if badIn.Flags()&balancer.Ejected == 0 {
		t.Fatalf("instance returning 500s not ejected: flags %v", badIn.Flags())
	}
	hits := b1.Hits()
	if hits != 5 {
		t.Errorf("bad instance served %d requests before ejection, want exactly the threshold 5", hits)
	}
	for i := 0; i < 30; i++ {
		if s := getStatus(t, base+"/x"); s != 200 {
			t.Errorf("after ejection: status %d", s)
		}
	}
	if b1.Hits() != hits {
		t.Errorf("ejected instance still got %d requests", b1.Hits()-hits)
	}
	d := g.Health()
	if d.Services[0].Status != "degraded" {
		t.Errorf("health = %+v, want degraded", d.Services[0])
	}
}
