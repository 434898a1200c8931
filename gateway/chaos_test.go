package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/balancer/health"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/discovery"
	"github.com/pyairtable/api-gateway/gateway"
)

// killable is a backend on a fixed loopback port that can be killed (every
// connection dropped) and brought back on the same port.
type killable struct {
	t    *testing.T
	addr string
	name string
	hits atomic.Int64
	mu   sync.Mutex
	srv  *http.Server
}

func newKillable(t *testing.T, name string) *killable {
	k := &killable{t: t, name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.addr = ln.Addr().String()
	k.serve(ln)
	t.Cleanup(k.kill)
	return k
}

func (k *killable) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.hits.Add(1)
		io.WriteString(w, k.name)
	})}
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go srv.Serve(ln)
}

func (k *killable) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		k.srv.Close()
		k.srv = nil
	}
}

func (k *killable) revive() {
	ln, err := net.Listen("tcp", k.addr)
	if err != nil {
		k.t.Fatalf("revive %s: %v", k.addr, err)
	}
	k.serve(ln)
}

func (k *killable) url() string { return "http://" + k.addr }

// TestChaosInstanceKilledUnderLoad kills one of three instances under
// steady load: no idempotent request may fail, the dead instance is taken
// out of rotation, and it gets traffic back after it recovers.
func TestChaosInstanceKilledUnderLoad(t *testing.T) {
	ks := []*killable{newKillable(t, "a"), newKillable(t, "b"), newKillable(t, "c")}
	var pool []*balancer.Instance
	for _, k := range ks {
		pool = append(pool, inst(t, k.url()))
	}
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{
			Name: "svc", Instances: pool, Balancer: &balancer.RoundRobin{}, RetryCount: 2,
			HealthCheck:    health.ActiveSettings{Path: "/health", Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond},
			Outlier:        gateway.OutlierPolicy{Settings: health.PassiveSettings{BaseEjection: 300 * time.Millisecond}},
			CircuitBreaker: gateway.BreakerPolicy{Settings: breaker.Settings{OpenTimeout: 300 * time.Millisecond}},
			Retry:          gateway.RetryPolicy{MinPerSecond: 50},
		}},
		Routes: []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Server: gateway.ServerSettings{ShutdownDelay: -1},
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	defer func() { stop(); <-served }()
	base := "http://" + ln.Addr().String()
	waitReady(t, base)

	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var failed, total atomic.Int64
	phase := atomic.Int32{} // 0 before kill, 1 dead, 2 revived
	var perPhase [3]sync.Map
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				resp, err := client.Get(base + "/work")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				n, _ := perPhase[phase.Load()].LoadOrStore(string(body), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	ks[1].kill()
	phase.Store(1)
	time.Sleep(500 * time.Millisecond)
	// By now it is out of rotation.
	if pool[1].Available() {
		t.Errorf("killed instance still available: flags %v", pool[1].Flags())
	}
	hitsWhileDead := ks[1].hits.Load()
	ks[1].revive()
	phase.Store(2)
	time.Sleep(1200 * time.Millisecond)
	stopLoad()
	wg.Wait()

	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d idempotent requests failed; failover should hide the dead instance", f, total.Load())
	}
	count := func(p int, name string) int64 {
		if v, ok := perPhase[p].Load(name); ok {
			return v.(*atomic.Int64).Load()
		}
		return 0
	}
	// Only requests already in flight when it died (one per worker at
	// most) can carry its answer.
	if n := count(1, "b"); n > 4 {
		t.Errorf("dead instance answered %d requests", n)
	}
	if n := count(2, "b"); n == 0 || ks[1].hits.Load() == hitsWhileDead {
		t.Errorf("revived instance got no traffic back (phase-2 answers %d)", n)
	}
	t.Logf("requests: %d total; phase answers a=%d/%d/%d b=%d/%d/%d c=%d/%d/%d", total.Load(),
		count(0, "a"), count(1, "a"), count(2, "a"), count(0, "b"), count(1, "b"), count(2, "b"), count(0, "c"), count(1, "c"), count(2, "c"))
}

func quietLogger() *slogLogger { return discardLogger }

// TestFileDiscoveryChangesMembership adds and removes instances through a
// watched file; in-flight requests to a removed instance complete.
func TestFileDiscoveryChangesMembership(t *testing.T) {
	a, b := newKillable(t, "a"), newKillable(t, "b")
	dir := t.TempDir()
	file := filepath.Join(dir, "eps.json")
	write := func(urls ...string) {
		var eps []discovery.Endpoint
		for _, u := range urls {
			eps = append(eps, discovery.Endpoint{URL: u, Weight: 1})
		}
		data, _ := json.Marshal(eps)
		tmp := file + ".tmp"
		os.WriteFile(tmp, data, 0o600)
		os.Rename(tmp, file)
	}
	write(a.url())
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "svc", Discovery: &discovery.File{Path: file, Interval: 20 * time.Millisecond}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Server:   gateway.ServerSettings{ShutdownDelay: -1},
		Logger:   quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	defer func() { stop(); <-served }()
	base := "http://" + ln.Addr().String()
	waitReady(t, base)
	seen := func() map[string]int {
		m := map[string]int{}
		for i := 0; i < 20; i++ {
			resp, err := http.Get(base + "/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m[fmt.Sprintf("%d:%s", resp.StatusCode, body)]++
		}
		return m
	}
	eventually(t, func() bool { m := seen(); return m["200:a"] == 20 }, "only instance a serves")
	write(a.url(), b.url())
	eventually(t, func() bool { m := seen(); return m["200:a"] > 0 && m["200:b"] > 0 }, "both instances serve after b is added")
	write(b.url())
	eventually(t, func() bool { m := seen(); return m["200:b"] == 20 }, "only b serves after a is removed")
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("timed out waiting until %s", what)
}
