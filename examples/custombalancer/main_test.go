package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// testPool returns instances a1, a2 (zone a), b1, b2 (zone b) and x (no
// zone), with the zone map NewZoneAware wants.
func testPool() ([]*balancer.Instance, map[string]string) {
	var pool []*balancer.Instance
	zones := map[string]string{}
	for _, name := range []string{"a1", "a2", "b1", "b2", "x"} {
		in := balancer.MustInstance("http://"+name+":80", 1)
		pool = append(pool, in)
		if name != "x" {
			zones[in.String()] = name[:1]
		}
	}
	return pool, zones
}

func requestFrom(zone string) *http.Request {
	r := httptest.NewRequest("GET", "/api/orders", nil)
	if zone != "" {
		r.Header.Set("X-Zone", zone)
	}
	return r
}

func TestZoneAwarePick(t *testing.T) {
	tests := []struct {
		name   string
		header string // for NewZoneAware
		zone   string
		down   []int // indexes of unavailable instances
		nilR   bool
		picks  int
		want   string // hostnames picked, or the error
	}{
		{name: "in zone a, in turn", zone: "a", picks: 4, want: "a1 a2 a1 a2"},
		{name: "in zone b, in turn", zone: "b", picks: 3, want: "b1 b2 b1"},
		{name: "no zone: round robin over all", picks: 6, want: "a1 a2 b1 b2 x a1"},
		{name: "nil request", nilR: true, picks: 2, want: "a1 a2"},
		{name: "unknown zone falls back", zone: "mars", picks: 3, want: "a1 a2 b1"},
		{name: "zone names are case-sensitive", zone: "A", picks: 3, want: "a1 a2 b1"},
		{name: "header name is not", header: "x-zone", zone: "b", picks: 3, want: "b1 b2 b1"},
		{name: "skips an unavailable instance of the zone", zone: "a", down: []int{0}, picks: 3, want: "a2 a2 a2"},
		{name: "zone down falls back to the others", zone: "a", down: []int{0, 1}, picks: 4, want: "b1 b2 x b1"},
		{name: "fallback skips unavailable too", down: []int{0, 2, 4}, picks: 3, want: "a2 b2 a2"},
		{name: "all unavailable", zone: "a", down: []int{0, 1, 2, 3, 4}, picks: 1, want: balancer.ErrNoInstance.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, zones := testPool()
			for _, i := range tt.down {
				pool[i].SetFlag(balancer.Unhealthy, true)
			}
			b := NewZoneAware(tt.header, zones)
			var got []string
			for range tt.picks {
				r := requestFrom(tt.zone)
				if tt.nilR {
					r = nil
				}
				in, err := b.Pick(r, pool)
				if err != nil {
					got = append(got, err.Error())
					continue
				}
				got = append(got, in.URL.Hostname())
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("Pick() = %s, want %s", g, tt.want)
			}
		})
	}
}

func TestZoneAwareEmptyPool(t *testing.T) {
	_, zones := testPool()
	if in, err := NewZoneAware("", zones).Pick(requestFrom("a"), nil); !errors.Is(err, balancer.ErrNoInstance) || in != nil {
		t.Errorf("Pick(empty pool) = %v, %v, want nil, ErrNoInstance", in, err)
	}
}

// NewZoneAware copies its map: the caller may change it afterwards.
func TestZoneAwareCopiesZones(t *testing.T) {
	pool, zones := testPool()
	b := NewZoneAware("X-Zone", zones)
	for k := range zones {
		zones[k] = "b"
	}
	if in, _ := b.Pick(requestFrom("a"), pool); in.URL.Hostname() != "a1" {
		t.Errorf("Pick() = %v after the caller's map changed, want a1", in)
	}
}

// Concurrent picks while other instances flap: a request from zone a always
// gets an instance of zone a, since one of them stays up throughout.
func TestZoneAwareConcurrent(t *testing.T) {
	pool, zones := testPool()
	b := NewZoneAware("", zones)
	stop := make(chan struct{})
	var flapper sync.WaitGroup
	flapper.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			pool[1+i%4].SetFlag(balancer.Ejected, i%3 == 0) // a2, b1, b2, x
		}
	})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			r := requestFrom("a")
			for range 2000 {
				in, err := b.Pick(r, pool)
				if err != nil || zones[in.String()] != "a" {
					errs <- fmt.Sprintf("Pick() = %v, %v, want an instance of zone a", in, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	flapper.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestZoneAwarePickDoesNotAllocate(t *testing.T) {
	pool, zones := testPool()
	b := NewZoneAware("", zones)
	r := requestFrom("b")
	pool[2].SetFlag(balancer.Unhealthy, true)
	if n := testing.AllocsPerRun(100, func() { b.Pick(r, pool) }); n != 0 {
		t.Errorf("Pick() allocates %v times, want 0", n)
	}
}

// The policy behind a real gateway, with real instances that die.
func TestZoneAwareBehindGateway(t *testing.T) {
	var pool []*balancer.Instance
	zones := map[string]string{}
	bs := map[string]*gatewaytest.FaultBackend{}
	for _, name := range []string{"a1", "a2", "b1", "b2"} {
		b := gatewaytest.NewFaultBackend(t, name, gatewaytest.Fault{})
		bs[name] = b
		in := balancer.MustInstance(b.URL(), 1)
		pool = append(pool, in)
		zones[in.String()] = name[:1]
	}
	g, err := newGateway(pool, zones, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("newGateway() error = %v", err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	c := srv.Client()
	t.Cleanup(c.CloseIdleConnections)
	send := func(zone string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/api/orders/7", nil)
		if zone != "" {
			req.Header.Set("X-Zone", zone)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Backend")
	}
	answers := func(zone string, n int) string {
		t.Helper()
		var got []string
		for range n {
			code, name := send(zone)
			if code != 200 {
				name = fmt.Sprint(code)
			}
			got = append(got, name)
		}
		return strings.Join(got, " ")
	}

	steps := []struct {
		name   string
		change func()
		zone   string
		want   string
	}{
		{"zone a in turn", nil, "a", "a1 a2 a1 a2"},
		{"zone b in turn", nil, "b", "b1 b2 b1 b2"},
		// Each attempt on the dead a1 fails to connect; the gateway asks
		// the policy again without a1, and a2 answers.
		{"a1 dead", bs["a1"].Kill, "a", "a2 a2 a2 a2 a2 a2 a2 a2"},
		{"a2 unhealthy too", func() { pool[1].SetFlag(balancer.Unhealthy, true) }, "a", "b1 b2 b1 b2"},
		{"every instance unhealthy", func() {
			for _, in := range pool {
				in.SetFlag(balancer.Unhealthy, true)
			}
		}, "a", "503 503"},
		{"b2 back", func() { pool[3].SetFlag(balancer.Unhealthy, false) }, "a", "b2 b2"},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		if got := answers(s.zone, len(strings.Fields(s.want))); got != s.want {
			t.Errorf("%s: answers = %s, want %s", s.name, got, s.want)
		}
	}
	if bs["a1"].Hits() != 2 {
		t.Errorf("a1 Hits() = %d, want the 2 before it died", bs["a1"].Hits())
	}
}

func BenchmarkZoneAwarePick(b *testing.B) {
	pool, zones := testPool()
	z := NewZoneAware("", zones)
	for _, bc := range []struct{ name, zone string }{{"in-zone", "b"}, {"fallback", ""}} {
		b.Run(bc.name, func(b *testing.B) {
			r := requestFrom(bc.zone)
			b.ReportAllocs()
			for b.Loop() {
				z.Pick(r, pool)
			}
		})
	}
}

func ExampleZoneAware() {
	pool := []*balancer.Instance{
		balancer.MustInstance("http://10.0.1.5:8080", 1),
		balancer.MustInstance("http://10.0.1.6:8080", 1),
		balancer.MustInstance("http://10.0.2.5:8080", 1),
	}
	b := NewZoneAware("X-Zone", map[string]string{
		"10.0.1.5:8080": "eu-1", "10.0.1.6:8080": "eu-1", "10.0.2.5:8080": "eu-2",
	})
	r, _ := http.NewRequest("GET", "/", nil)
	r.Header.Set("X-Zone", "eu-1")
	for range 3 {
		in, _ := b.Pick(r, pool)
		fmt.Println(in)
	}
	pool[0].SetFlag(balancer.Unhealthy, true)
	pool[1].SetFlag(balancer.Unhealthy, true)
	in, _ := b.Pick(r, pool)
	fmt.Println("eu-1 down:", in)
	pool[2].SetFlag(balancer.Draining, true)
	_, err := b.Pick(r, pool)
	fmt.Println(err)
	// Output:
	// 10.0.1.5:8080
	// 10.0.1.6:8080
	// 10.0.1.5:8080
	// eu-1 down: 10.0.2.5:8080
	// balancer: no available instance
}
