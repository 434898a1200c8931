package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// clock is a manual clock for the breakers: they stay open until the test
// moves it. Instance statistics keep real time, as latencies are real.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newClient returns a client whose Transport balances over backends.
func newClient(t *testing.T, s Settings, backends ...*gatewaytest.FaultBackend) (*http.Client, *Transport) {
	t.Helper()
	for _, b := range backends {
		s.Instances = append(s.Instances, b.URL())
	}
	tr, err := NewTransport(s)
	if err != nil {
		t.Fatalf("NewTransport() error = %v", err)
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c, tr
}

// dead returns a backend that was killed: its address refuses connections.
func dead(t *testing.T, name string) *gatewaytest.FaultBackend {
	b := gatewaytest.NewFaultBackend(t, name, gatewaytest.Fault{})
	b.Kill()
	return b
}

// outcome sends one request and describes the answer as "200 ok", or
// "error: ...".
func outcome(c *http.Client, req *http.Request) string {
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Backend"))
}

func get(c *http.Client) string {
	req, _ := http.NewRequest("GET", "http://users/api/v1/users/me", nil)
	return outcome(c, req)
}

// With one dead and one failing instance, the client never sees an error:
// attempts on the dead one are retried elsewhere, and the failing one's
// 500s stop once its breaker opens, whatever the policy.
func TestTransportKeepsSucceeding(t *testing.T) {
	for _, tt := range []struct {
		name string
		bal  func() balancer.Balancer
	}{
		{"health score", func() balancer.Balancer { return &balancer.HealthScore{} }},
		{"round robin", func() balancer.Balancer { return &balancer.RoundRobin{} }},
		{"least connections", func() balancer.Balancer { return &balancer.LeastConnections{} }},
		{"random", func() balancer.Balancer { return &balancer.Random{} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok := gatewaytest.NewFaultBackend(t, "ok", gatewaytest.Fault{})
			bad := gatewaytest.NewFaultBackend(t, "bad", gatewaytest.Fault{Status: 500})
			down := dead(t, "dead")
			clk := newClock()
			c, tr := newClient(t, Settings{
				Balancer: tt.bal(),
				Breaker:  breaker.Settings{ConsecutiveFailures: 3, OpenTimeout: time.Minute, Now: clk.Now},
			}, ok, bad, down)

			// The dead instance's breaker opens after 3 attempts too, unless
			// the policy stops choosing it first (HealthScore may).
			open := func() bool { return tr.Instances()[1].Breaker == breaker.Open }
			var fives int
			for i := 0; i < 2000 && !open(); i++ {
				switch got := get(c); got {
				case "200 ok":
				case "500 bad":
					fives++
				default:
					t.Fatalf("request %d: %s, want 200 ok or 500 bad", i, got)
				}
			}
			switch {
			case open():
				if fives != 3 || bad.Hits() != 3 {
					t.Errorf("client saw %d 500s, the failing instance %d requests; want 3 and 3 (its breaker trips at 3)", fives, bad.Hits())
				}
			case bad.Hits() < 3 && int64(fives) == bad.Hits():
				// The policy itself stopped choosing the failing instance
				// (HealthScore penalises errors) before its breaker tripped.
			default:
				t.Fatalf("after 2000 requests: %+v, %d 500s; want the failing instance's breaker open or the instance avoided", tr.Instances(), fives)
			}
			for i := range 50 {
				if got := get(c); got != "200 ok" {
					t.Fatalf("request %d after the breakers opened: %s, want 200 ok", i, got)
				}
			}
			s := tr.Instances()
			if s[0].Breaker != breaker.Closed || s[0].Failures != 0 || s[0].Requests != uint64(ok.Hits()) {
				t.Errorf("healthy instance: %+v, want closed, no failures, %d requests", s[0], ok.Hits())
			}
			if s[2].Requests != s[2].Failures || s[2].Requests > 3 || (s[2].Requests == 3) != (s[2].Breaker == breaker.Open) || down.Hits() != 0 {
				t.Errorf("dead instance: %+v, %d hits; want only failed attempts, at most 3, the breaker open at 3", s[2], down.Hits())
			}
		})
	}
}

// echoBody is a backend that answers with the request body it read.
func echoBody(t *testing.T, name string) *gatewaytest.Backend {
	return gatewaytest.NewBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		io.Copy(w, r.Body)
	}))
}

// Only an idempotent request that reached no instance is sent again, and
// its body is sent whole the second time.
func TestTransportRetries(t *testing.T) {
	type request struct {
		method string
		body   io.Reader
	}
	tests := []struct {
		name    string
		req     request
		first   string // the instance round robin tries first: "dead" or "bad"
		want    string
		wantHit int64 // requests the second instance received
	}{
		{"GET retried", request{"GET", nil}, "dead", "200 ok ", 1},
		{"PUT with a replayable body retried", request{"PUT", strings.NewReader("payload")}, "dead", "200 ok payload", 1},
		{"DELETE retried", request{"DELETE", nil}, "dead", "200 ok ", 1},
		{"POST not retried", request{"POST", strings.NewReader("payload")}, "dead", "error: connection refused", 0},
		{"PUT with a one-shot body not retried", request{"PUT", io.NopCloser(strings.NewReader("payload"))}, "dead", "error: connection refused", 0},
		{"500 not retried", request{"GET", nil}, "bad", "500 bad ", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first *gatewaytest.FaultBackend
			if tt.first == "dead" {
				first = dead(t, "dead")
			} else {
				first = gatewaytest.NewFaultBackend(t, "bad", gatewaytest.Fault{Status: 500})
			}
			second := echoBody(t, "ok")
			tr, err := NewTransport(Settings{Instances: []string{first.URL(), second.URL}, Balancer: &balancer.RoundRobin{}})
			if err != nil {
				t.Fatal(err)
			}
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			t.Cleanup(c.CloseIdleConnections)
			req, _ := http.NewRequest(tt.req.method, "http://orders/api/v1/orders", tt.req.body)
			got := ""
			resp, err := c.Do(req)
			switch {
			case err != nil && gatewaytest.IsRefused(err):
				got = "error: connection refused"
			case err != nil:
				got = "error: " + err.Error()
			default:
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				name := resp.Header.Get("X-Backend")
				if name != "ok" {
					body = nil // only the body-echoing instance's body is of interest
				}
				got = fmt.Sprintf("%d %s %s", resp.StatusCode, name, body)
			}
			if got != tt.want {
				t.Errorf("%s = %q, want %q", tt.req.method, got, tt.want)
			}
			if second.Hits() != tt.wantHit {
				t.Errorf("second instance Hits() = %d, want %d", second.Hits(), tt.wantHit)
			}
			if req.URL.Host != "orders" || req.URL.Scheme != "http" || req.Host != "orders" {
				t.Errorf("the caller's request was changed: URL host %q, Host %q", req.URL.Host, req.Host)
			}
		})
	}
}

// When every instance is down the client gets connection errors until the
// breakers open, then balancer.ErrNoInstance without any dialling.
func TestTransportAllDown(t *testing.T) {
	clk := newClock()
	c, tr := newClient(t, Settings{
		Balancer: &balancer.RoundRobin{},
		Breaker:  breaker.Settings{ConsecutiveFailures: 2, Now: clk.Now},
	}, dead(t, "a"), dead(t, "b"))
	var got []string
	for range 4 {
		req, _ := http.NewRequest("GET", "http://users/", nil)
		_, err := c.Do(req)
		switch {
		case errors.Is(err, balancer.ErrNoInstance):
			got = append(got, "no-instance")
		case gatewaytest.IsRefused(err):
			got = append(got, "refused")
		default:
			got = append(got, fmt.Sprint(err))
		}
	}
	// Each request tries both instances; two requests trip both breakers.
	if g, want := strings.Join(got, " "), "refused refused no-instance no-instance"; g != want {
		t.Errorf("outcomes = %s, want %s", g, want)
	}
	for _, s := range tr.Instances() {
		if s.Requests != 2 || s.Breaker != breaker.Open {
			t.Errorf("instance %+v, want 2 attempts and an open breaker", s)
		}
	}
}

// An open breaker lets a probe through when its time is up: a failing probe
// opens it again for twice as long, a succeeding one closes it.
func TestTransportBreakerRecovery(t *testing.T) {
	ok := gatewaytest.NewFaultBackend(t, "ok", gatewaytest.Fault{})
	bad := gatewaytest.NewFaultBackend(t, "bad", gatewaytest.Fault{Status: 503})
	clk := newClock()
	c, tr := newClient(t, Settings{
		Balancer: &balancer.RoundRobin{},
		Breaker:  breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: 10 * time.Second, HalfOpenRequests: 1, Now: clk.Now},
	}, ok, bad)
	state := func() breaker.State { return tr.Instances()[1].Breaker }

	steps := []struct {
		name    string
		advance time.Duration
		heal    bool
		want    string // answers to two requests
		state   breaker.State
		hits    int64 // of the failing instance, in total
	}{
		{name: "trip", want: "200 ok,503 bad", state: breaker.Open, hits: 1},
		{name: "open", advance: 9 * time.Second, want: "200 ok,200 ok", state: breaker.Open, hits: 1},
		{name: "probe fails", advance: time.Second, want: "200 ok,503 bad", state: breaker.Open, hits: 2},
		{name: "open twice as long", advance: 19 * time.Second, want: "200 ok,200 ok", state: breaker.Open, hits: 2},
		{name: "probe succeeds", advance: time.Second, heal: true, want: "200 ok,200 bad", state: breaker.Closed, hits: 3},
		{name: "back in rotation", want: "200 ok,200 bad", state: breaker.Closed, hits: 4},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		if s.heal {
			bad.Set(gatewaytest.Fault{})
		}
		got := get(c) + "," + get(c)
		if got != s.want || state() != s.state || bad.Hits() != s.hits {
			t.Errorf("%s: answers %q, breaker %v, hits %d; want %q, %v, %d", s.name, got, state(), bad.Hits(), s.want, s.state, s.hits)
		}
	}
}

// A caller that gives up is no verdict on the instance: neither its
// statistics nor its breaker count a failure.
func TestTransportCanceledIsNotAFailure(t *testing.T) {
	hung := gatewaytest.NewFaultBackend(t, "hung", gatewaytest.Fault{Hang: true})
	c, tr := newClient(t, Settings{Breaker: breaker.Settings{ConsecutiveFailures: 1}}, hung)
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://users/", nil)
		n := hung.Hits()
		go func() {
			for hung.Hits() == n {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		if _, err := c.Do(req); !errors.Is(err, context.Canceled) {
			t.Fatalf("Do() error = %v, want context.Canceled", err)
		}
	}
	if s := tr.Instances()[0]; s.Breaker != breaker.Closed || s.Failures != 0 || s.Requests != 3 {
		t.Errorf("instance after 3 canceled requests: %+v, want closed, 3 requests, 0 failures", s)
	}
}

func TestNewTransportRefusesBadInstances(t *testing.T) {
	for _, urls := range [][]string{nil, {"not a url"}, {"ftp://host/"}} {
		if _, err := NewTransport(Settings{Instances: urls}); err == nil {
			t.Errorf("NewTransport(%q) error = nil, want one", urls)
		}
	}
}

// The Transport starts no goroutine: once idle connections are closed,
// the count is back where it was.
func TestTransportNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("traffic", func(t *testing.T) {
		c, _ := newClient(t, Settings{}, gatewaytest.NewFaultBackend(t, "a", gatewaytest.Fault{}), dead(t, "b"),
			gatewaytest.NewFaultBackend(t, "c", gatewaytest.Fault{Status: 502}))
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 10 {
					get(c)
				}
			})
		}
		wg.Wait()
	})
	var after int
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before || time.Now().After(deadline) {
			break
		}
	}
	if after > before {
		buf := make([]byte, 1<<16)
		t.Errorf("NumGoroutine() = %d after the client closed, want <= %d\n%s", after, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	tr, err := NewTransport(Settings{Instances: []string{"http://10.0.0.1", "http://10.0.0.2", "http://10.0.0.3"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://users/", nil)
	if n := testing.AllocsPerRun(100, func() {
		_, done, _ := tr.pick(req, nil)
		done(nil)
	}); n != 0 {
		t.Errorf("pick() allocates %v times, want 0", n)
	}
}

func BenchmarkPick(b *testing.B) {
	tr, err := NewTransport(Settings{Instances: []string{"http://10.0.0.1", "http://10.0.0.2", "http://10.0.0.3"}})
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://users/", nil)
	b.ReportAllocs()
	for b.Loop() {
		in, done, _ := tr.pick(req, nil)
		in.Begin()
		in.End(time.Millisecond, false, time.Now())
		done(nil)
	}
}

// BenchmarkRoundTrip is the whole client path against a real loopback
// instance; compare with BenchmarkDirect for the Transport's share.
func BenchmarkRoundTrip(b *testing.B) {
	srv := gatewaytest.NewBackend(b, "bench", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tr, err := NewTransport(Settings{Instances: []string{srv.URL}})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	benchClient(b, &http.Client{Transport: tr}, "http://users/")
}

func BenchmarkDirect(b *testing.B) {
	srv := gatewaytest.NewBackend(b, "bench", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	benchClient(b, &http.Client{Transport: tr}, srv.URL+"/")
}

func benchClient(b *testing.B, c *http.Client, url string) {
	req, _ := http.NewRequest("GET", url, nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func ExampleTransport() {
	down, _ := gatewaytest.StartFaultBackend("down", gatewaytest.Fault{})
	down.Kill()
	defer down.Close()
	up, _ := gatewaytest.StartFaultBackend("up", gatewaytest.Fault{})
	defer up.Close()

	tr, err := NewTransport(Settings{
		Instances: []string{down.URL(), up.URL()},
		Balancer:  &balancer.RoundRobin{},
		Breaker:   breaker.Settings{ConsecutiveFailures: 2},
	})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for range 3 {
		resp, err := client.Get("http://users/api/v1/users/me")
		if err != nil {
			fmt.Println(err)
			continue
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("X-Backend"))
	}
	dead := tr.Instances()[0]
	fmt.Printf("dead instance: %d failed attempts, breaker %v\n", dead.Failures, dead.Breaker)
	// Output:
	// 200 up
	// 200 up
	// 200 up
	// dead instance: 2 failed attempts, breaker open
}
