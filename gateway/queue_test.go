package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/metrics"
)

// holdingBackend answers once release is closed, counting the requests it
// holds at once.
type holdingBackend struct {
	*httptest.Server
	release   chan struct{}
	cur, peak atomic.Int32
	seen      atomic.Int32
}

func newHoldingBackend(t *testing.T) *holdingBackend {
	b := &holdingBackend{release: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.seen.Add(1)
		n := b.cur.Add(1)
		defer b.cur.Add(-1)
		for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
		}
		if r.URL.Path == "/stream" {
			// A stream is exempt from the service timeout once its
			// headers are out; it keeps its slot until it ends.
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}
		select {
		case <-b.release:
		case <-r.Context().Done():
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(b.Close)
	return b
}

func waitSeen(t *testing.T, b *holdingBackend, n int32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); b.seen.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("backend saw %d requests, want %d", b.seen.Load(), n)
		}
	}
}

// TestMaxConnsPerInstanceQueues: requests beyond the bound wait in the
// gateway and all get their answer; the backend never holds more.
func TestMaxConnsPerInstanceQueues(t *testing.T) {
	b := newHoldingBackend(t)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	g, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}, MaxConnsPerInstance: 2}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc"}},
		Metrics:  m,
	})
	const n = 6
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(base + "/q")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	waitSeen(t, b, 2)
	time.Sleep(50 * time.Millisecond) // the other four are queued, not sent
	if s := b.seen.Load(); s != 2 {
		t.Fatalf("backend saw %d requests while 2 were held, want 2", s)
	}
	if in := g.Health().Services[0].Instances[0]; in.Queued != n-2 {
		t.Errorf("/health/detailed: queued %d, want %d", in.Queued, n-2)
	}
	close(b.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("status %d, want 200", c)
		}
	}
	if p := b.peak.Load(); p != 2 {
		t.Errorf("backend held %d requests at once, want 2", p)
	}
	if s := b.seen.Load(); s != n {
		t.Errorf("backend saw %d requests, want %d", s, n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var queued, waits float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "gateway_upstream_queued_total":
			for _, m := range mf.GetMetric() {
				queued += m.GetCounter().GetValue()
			}
		case "gateway_upstream_queue_wait_seconds":
			for _, m := range mf.GetMetric() {
				waits += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	if queued != n-2 || waits != n-2 {
		t.Errorf("metrics: %v queued, %v waits observed; want %d each", queued, waits, n-2)
	}
}

// TestQueuedRequestEnds: a request still queued when its time is up is
// answered with problem+json and never reaches the backend, whose one slot
// a stream holds: 504 at the service timeout, or 503 with Retry-After at a
// shorter queue timeout (which, were it ignored, would give the 504).
func TestQueuedRequestEnds(t *testing.T) {
	for _, tc := range []struct {
		name          string
		timeout, wait time.Duration
		status        int
	}{
		{"service timeout", 300 * time.Millisecond, 0, http.StatusGatewayTimeout},
		{"queue timeout", 10 * time.Second, 50 * time.Millisecond, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newHoldingBackend(t)
			defer close(b.release)
			_, base := newGateway(t, gateway.Config{
				Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)},
					MaxConnsPerInstance: 1, Timeout: tc.timeout, QueueTimeout: tc.wait}},
				Routes: []gateway.Route{{Prefix: "/", Service: "svc"}},
			})
			stream, err := http.Get(base + "/stream")
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Body.Close()
			waitSeen(t, b, 1)
			res := get(t, base+"/queued")
			if res.status != tc.status || res.problem["status"] != float64(tc.status) || res.problem["request_id"] == nil {
				t.Fatalf("queued request: status %d, problem %v; want %d problem+json with a request_id", res.status, res.problem, tc.status)
			}
			if tc.status == http.StatusServiceUnavailable && res.header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
			if s := b.seen.Load(); s != 1 {
				t.Errorf("backend saw %d requests, want only the stream", s)
			}
		})
	}
}

// TestMaxConnsPerInstanceFollowsUpdate: an update that keeps the bound
// keeps the slots in use (the bound holds across it); one that changes it
// applies to new requests at once, and requests of the old gate finish.
func TestMaxConnsPerInstanceFollowsUpdate(t *testing.T) {
	b := newHoldingBackend(t)
	in := inst(t, b.URL)
	cfg := func(bound int) gateway.Config {
		return gateway.Config{
			Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{in}, MaxConnsPerInstance: bound}},
			Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		}
	}
	g, base := newGateway(t, cfg(1))
	codes := make(chan int, 8)
	send := func() {
		go func() {
			resp, err := http.Get(base + "/u")
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	queued := func() int { return g.Health().Services[0].Instances[0].Queued }
	send()
	waitSeen(t, b, 1)
	if err := g.Update(cfg(1)); err != nil { // same bound: same gate
		t.Fatal(err)
	}
	send()
	for deadline := time.Now().Add(5 * time.Second); queued() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queued %d after an update keeping the bound, want 1", queued())
		}
	}
	if s := b.seen.Load(); s != 1 {
		t.Fatalf("backend saw %d requests with a bound of 1 kept across an update, want 1", s)
	}
	if err := g.Update(cfg(3)); err != nil {
		t.Fatal(err)
	}
	send()
	send()
	waitSeen(t, b, 3) // the new bound admits both at once
	close(b.release)
	for range 4 {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("status %d, want 200", c)
		}
	}
	if q := queued(); q != 0 {
		t.Errorf("queued %d at the end, want 0", q)
	}
}
