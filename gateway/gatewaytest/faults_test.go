package gatewaytest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// newClient returns a client that opens a fresh connection per request, so
// that net/http never retries a request on another connection behind the
// test's back, and gives up after timeout.
func newClient(t *testing.T, timeout time.Duration) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// result is what a client observed of one request.
type result struct {
	resp    *http.Response
	body    []byte
	err     error // of the request, or of reading the body
	elapsed time.Duration
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return result{err: err}
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{resp: resp, body: b, err: err, elapsed: time.Since(start)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func wantEcho(t *testing.T, r result, status int, name string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request error = %v, want status %d", r.err, status)
	}
	if r.resp.StatusCode != status {
		t.Errorf("status = %d, want %d", r.resp.StatusCode, status)
	}
	if got := r.resp.Header.Get("X-Backend"); got != name {
		t.Errorf("X-Backend = %q, want %q", got, name)
	}
	var e gatewaytest.Echo
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body %q is not an Echo: %v", r.body, err)
	}
	if e.Service != name || e.Path != "/v1/items" || e.Query != "q=1" {
		t.Errorf("Echo = %+v, want service %q, path /v1/items, query q=1", e, name)
	}
}

func TestFaultBackendFaults(t *testing.T) {
	const name = "orders"
	tests := []struct {
		name    string
		fault   gatewaytest.Fault
		method  string
		body    string
		timeout time.Duration
		check   func(t *testing.T, r result)
	}{
		{name: "healthy", check: func(t *testing.T, r result) { wantEcho(t, r, 200, name) }},
		{name: "status 503", fault: gatewaytest.Fault{Status: 503}, check: func(t *testing.T, r result) { wantEcho(t, r, 503, name) }},
		{name: "status 204 has no body", fault: gatewaytest.Fault{Status: 204}, check: func(t *testing.T, r result) {
			if r.err != nil || r.resp.StatusCode != 204 || len(r.body) != 0 {
				t.Errorf("got %v %v %q, want 204 without body", r.err, r.resp, r.body)
			}
		}},
		{name: "latency", fault: gatewaytest.Fault{Latency: 60 * time.Millisecond}, check: func(t *testing.T, r result) {
			wantEcho(t, r, 200, name)
			if r.elapsed < 60*time.Millisecond {
				t.Errorf("answered after %v, want at least 60ms", r.elapsed)
			}
		}},
		{name: "latency and status", fault: gatewaytest.Fault{Latency: 30 * time.Millisecond, Status: 500}, check: func(t *testing.T, r result) {
			wantEcho(t, r, 500, name)
			if r.elapsed < 30*time.Millisecond {
				t.Errorf("answered after %v, want at least 30ms", r.elapsed)
			}
		}},
		{name: "reset", fault: gatewaytest.Fault{Reset: true}, check: func(t *testing.T, r result) {
			if !gatewaytest.IsReset(r.err) {
				t.Errorf("request error = %v, want a connection reset", r.err)
			}
		}},
		{name: "reset after reading a body", fault: gatewaytest.Fault{Reset: true}, method: "POST", body: strings.Repeat("x", 256<<10), check: func(t *testing.T, r result) {
			if !gatewaytest.IsReset(r.err) {
				t.Errorf("request error = %v, want a connection reset", r.err)
			}
		}},
		{name: "reset wins over status", fault: gatewaytest.Fault{Reset: true, Hang: true, Status: 500}, check: func(t *testing.T, r result) {
			if !gatewaytest.IsReset(r.err) {
				t.Errorf("request error = %v, want a connection reset", r.err)
			}
		}},
		{name: "hang until the client gives up", fault: gatewaytest.Fault{Hang: true}, timeout: 100 * time.Millisecond, check: func(t *testing.T, r result) {
			if !isTimeout(r.err) {
				t.Errorf("request error = %v, want a client timeout", r.err)
			}
			if r.elapsed < 100*time.Millisecond {
				t.Errorf("gave up after %v, want at least the 100ms timeout", r.elapsed)
			}
		}},
		{name: "stalled body arrives whole", fault: gatewaytest.Fault{StallBody: 60 * time.Millisecond}, check: func(t *testing.T, r result) {
			wantEcho(t, r, 200, name)
			if r.elapsed < 60*time.Millisecond {
				t.Errorf("body complete after %v, want at least the 60ms stall", r.elapsed)
			}
		}},
		{name: "HEAD has headers only", fault: gatewaytest.Fault{Status: 202}, method: "HEAD", check: func(t *testing.T, r result) {
			if r.err != nil || r.resp.StatusCode != 202 || len(r.body) != 0 || r.resp.Header.Get("X-Backend") != name {
				t.Errorf("got %v %v %q, want 202 with X-Backend and no body", r.err, r.resp, r.body)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := gatewaytest.NewFaultBackend(t, name, tt.fault)
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			method := tt.method
			if method == "" {
				method = "GET"
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			tt.check(t, do(t, newClient(t, timeout), method, b.URL()+"/v1/items?q=1", body))
			if got := b.Hits(); got != 1 {
				t.Errorf("Hits() = %d, want 1", got)
			}
		})
	}
}

// A client that gives up during the stall has read exactly the first half
// of the body: the headers and half were sent before the stall.
func TestFaultBackendStallIsObservable(t *testing.T) {
	b := gatewaytest.NewFaultBackend(t, "slow", gatewaytest.Fault{StallBody: time.Hour})
	c := newClient(t, 300*time.Millisecond)
	resp, err := c.Get(b.URL() + "/v1/items?q=1")
	if err != nil {
		t.Fatalf("Get() error = %v, want the headers before the stall", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if !isTimeout(err) {
		t.Errorf("reading the body: error = %v, want a client timeout", err)
	}
	if want := resp.ContentLength / 2; int64(len(got)) != want || !bytes.HasPrefix(got, []byte(`{"service":"slow"`)) {
		t.Errorf("read %d bytes %q before the stall, want the first %d", len(got), got, want)
	}
}

func TestFaultBackendFailEvery(t *testing.T) {
	b := gatewaytest.NewFaultBackend(t, "flaky", gatewaytest.Fault{Status: 500, FailEvery: 3})
	c := newClient(t, 5*time.Second)
	statuses := func(n int) string {
		var s []string
		for range n {
			r := do(t, c, "GET", b.URL(), nil)
			if r.err != nil {
				t.Fatal(r.err)
			}
			s = append(s, r.resp.Status[:3])
		}
		return strings.Join(s, " ")
	}
	if got, want := statuses(7), "200 200 500 200 200 500 200"; got != want {
		t.Errorf("statuses = %s, want %s", got, want)
	}
	// Set restarts the count.
	b.Set(gatewaytest.Fault{Status: 503, FailEvery: 2})
	if got, want := statuses(4), "200 503 200 503"; got != want {
		t.Errorf("statuses after Set = %s, want %s", got, want)
	}
	b.Set(gatewaytest.Fault{Status: 502, FailEvery: 1})
	if got, want := statuses(2), "502 502"; got != want {
		t.Errorf("statuses with FailEvery 1 = %s, want %s", got, want)
	}
	if got := b.Hits(); got != 13 {
		t.Errorf("Hits() = %d, want 13", got)
	}
}

func TestFaultBackendSetWhileRunning(t *testing.T) {
	b := gatewaytest.NewFaultBackend(t, "users", gatewaytest.Fault{})
	c := newClient(t, 500*time.Millisecond)
	steps := []struct {
		fault gatewaytest.Fault
		want  func(result) bool
		what  string
	}{
		{gatewaytest.Fault{}, func(r result) bool { return r.err == nil && r.resp.StatusCode == 200 }, "200"},
		{gatewaytest.Fault{Status: 503}, func(r result) bool { return r.err == nil && r.resp.StatusCode == 503 }, "503"},
		{gatewaytest.Fault{Reset: true}, func(r result) bool { return gatewaytest.IsReset(r.err) }, "a reset"},
		{gatewaytest.Fault{Hang: true}, func(r result) bool { return isTimeout(r.err) }, "a timeout"},
		{gatewaytest.Fault{}, func(r result) bool { return r.err == nil && r.resp.StatusCode == 200 }, "200 again"},
	}
	for i, s := range steps {
		b.Set(s.fault)
		if r := do(t, c, "GET", b.URL(), nil); !s.want(r) {
			t.Errorf("step %d: got %v %v, want %s", i, r.err, r.resp, s.what)
		}
	}
}

func TestFaultBackendKillRevive(t *testing.T) {
	b := gatewaytest.NewFaultBackend(t, "users", gatewaytest.Fault{})
	c := newClient(t, 2*time.Second)
	url := b.URL()
	if r := do(t, c, "GET", url, nil); r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("before Kill: %v %v, want 200", r.err, r.resp)
	}

	b.Kill()
	b.Kill() // a dead backend stays dead
	if r := do(t, c, "GET", url, nil); !gatewaytest.IsRefused(r.err) {
		t.Errorf("after Kill: error = %v, want connection refused", r.err)
	}

	b.Revive()
	b.Revive() // a live backend stays as it is
	if b.URL() != url {
		t.Errorf("URL() = %s after Revive, want the same %s", b.URL(), url)
	}
	if r := do(t, c, "GET", url, nil); r.err != nil || r.resp.StatusCode != 200 {
		t.Errorf("after Revive: %v %v, want 200", r.err, r.resp)
	}
	if got := b.Hits(); got != 2 {
		t.Errorf("Hits() = %d, want 2 (one per life)", got)
	}

	b.Close()
	b.Revive() // closed for good
	if r := do(t, c, "GET", url, nil); !gatewaytest.IsRefused(r.err) {
		t.Errorf("Revive after Close: error = %v, want connection refused", r.err)
	}
}

// Kill ends requests in flight without an answer, and returns only once
// they have ended.
func TestFaultBackendKillEndsRequestsInFlight(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault gatewaytest.Fault
	}{
		{"hang", gatewaytest.Fault{Hang: true}},
		{"latency", gatewaytest.Fault{Latency: time.Hour}},
		{"stalled body", gatewaytest.Fault{StallBody: time.Hour}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := gatewaytest.NewFaultBackend(t, "dying", tt.fault)
			c := newClient(t, 10*time.Second)
			got := make(chan result, 1)
			go func() { got <- do(t, c, "GET", b.URL(), nil) }()
			waitFor(t, func() bool { return b.Hits() == 1 })
			start := time.Now()
			b.Kill()
			r := <-got
			if r.err == nil {
				t.Errorf("request in flight got %v %q, want an error", r.resp.Status, r.body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the request ended %v after Kill, want at once", d)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
	}
}

// Every goroutine a backend starts (server, connections, handlers stuck in
// faults) is gone once the backends are closed and clients have left.
func TestFaultBackendNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("exercise", func(t *testing.T) {
		c := newClient(t, 100*time.Millisecond)
		for _, f := range []gatewaytest.Fault{
			{}, {Status: 500}, {Reset: true}, {Hang: true}, {StallBody: time.Hour}, {Latency: time.Hour},
		} {
			b := gatewaytest.NewFaultBackend(t, "leak", f)
			do(t, c, "GET", b.URL(), nil)
		}
		hung := gatewaytest.NewFaultBackend(t, "killed", gatewaytest.Fault{Hang: true})
		slow := newClient(t, time.Minute)
		done := make(chan struct{})
		go func() {
			defer close(done)
			do(t, slow, "GET", hung.URL(), nil)
		}()
		waitFor(t, func() bool { return hung.Hits() == 1 })
		hung.Kill()
		<-done
		hung.Revive()
		// Closed with a handler hanging and a client still waiting: Close
		// must end it.
		go do(t, slow, "GET", hung.URL(), nil)
		waitFor(t, func() bool { return hung.Hits() == 2 })
	})
	var after int
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before || time.Now().After(deadline) {
			break
		}
	}
	if after > before {
		buf := make([]byte, 1<<16)
		t.Errorf("NumGoroutine() = %d after the backends closed, want <= %d\n%s", after, before, buf[:runtime.Stack(buf, true)])
	}
}
