// Command clientlb shows client-side load balancing with the library's
// parts and no gateway: Transport is an http.RoundTripper that lets a plain
// http.Client spread its requests over the instances of one service.
//
// For each request the Transport picks an instance with a balancer.Balancer
// (balancer.HealthScore by default), skips instances whose circuit breaker
// refuses calls, sends the request there, and keeps the instance's live
// statistics (in flight, latency, error rate) that the policy reads. Connect
// errors and 5xx answers count as failures for the breaker and the
// statistics. An idempotent request whose instance could not be reached is
// sent once more, to another instance.
//
//	go run ./examples/clientlb
//
// The program starts three stand-in instances on 127.0.0.1 — one healthy,
// one answering 500, one dead — sends 40 requests through a Transport,
// prints which instance answered each, then the state of every instance,
// and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// Settings configures a Transport.
type Settings struct {
	// Instances are the base URLs of the service's instances (scheme and
	// host; a path is ignored). At least one is required.
	Instances []string
	// Balancer picks an instance per attempt. If nil, a new
	// balancer.HealthScore. It should serve this Transport only, as the
	// library's policies learn from the pools they see.
	Balancer balancer.Balancer
	// Breaker configures the breaker of each instance (Name is set to the
	// instance's host:port; Breaker.Now is the breakers' clock). The zero
	// value gives the breaker package's defaults.
	Breaker breaker.Settings
	// Base sends each attempt. If nil, a clone of http.DefaultTransport.
	Base http.RoundTripper
	// Now is the clock of the instance statistics (and of the default
	// HealthScore). If nil, time.Now.
	Now func() time.Time
}

// Transport is an http.RoundTripper that sends each request to one of a
// service's instances. The request's scheme and host are replaced by the
// instance's, so a client may address the service by any name
// ("http://users/..."); its path, query, headers and body are sent as they
// are.
//
// It is safe for concurrent use and starts no goroutine of its own (Base
// keeps idle connections; CloseIdleConnections closes them).
type Transport struct {
	pool     []*balancer.Instance
	breakers map[*balancer.Instance]*breaker.Circuit
	bal      balancer.Balancer
	base     http.RoundTripper
	now      func() time.Time
}

// errFailureStatus is the outcome reported to a breaker for a 5xx answer.
var errFailureStatus = errors.New("clientlb: 5xx from instance")

// NewTransport returns a Transport over s.Instances. It returns an error if
// there is no instance or a URL is not an absolute http(s) URL.
func NewTransport(s Settings) (*Transport, error) {
	if len(s.Instances) == 0 {
		return nil, errors.New("clientlb: no instance")
	}
	t := &Transport{
		breakers: make(map[*balancer.Instance]*breaker.Circuit, len(s.Instances)),
		bal:      s.Balancer,
		base:     s.Base,
		now:      s.Now,
	}
	if t.bal == nil {
		t.bal = &balancer.HealthScore{Now: s.Now}
	}
	if t.base == nil {
		t.base = http.DefaultTransport.(*http.Transport).Clone()
	}
	if t.now == nil {
		t.now = time.Now
	}
	for _, u := range s.Instances {
		in, err := balancer.NewInstance(u, 1)
		if err != nil {
			return nil, fmt.Errorf("clientlb: %w", err)
		}
		bs := s.Breaker // a copy per instance: s is not modified
		bs.Name = in.String()
		t.pool = append(t.pool, in)
		t.breakers[in] = breaker.New(bs)
	}
	return t, nil
}

// RoundTrip implements http.RoundTripper. A 5xx answer is returned as is
// (after counting as a failure); only a request that reached no instance
// is retried, once, and only when it is idempotent (GET, HEAD, OPTIONS,
// TRACE, PUT, DELETE) and its body can be sent again (none, or GetBody
// set, as http.NewRequest does for in-memory bodies).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	retry := idempotent(req)
	var tried []*balancer.Instance
	for {
		in, done, err := t.pick(req, tried)
		if err != nil {
			if req.Body != nil {
				req.Body.Close() // a RoundTripper closes the body, even on error
			}
			// balancer.ErrNoInstance: every instance's breaker refuses, or
			// the one left after a failed attempt does.
			return nil, fmt.Errorf("clientlb: %s: %w", req.URL.Host, err)
		}
		// A shallow copy with its own URL: the caller's request is not
		// modified, and headers need no copy as nothing changes them.
		out := req.WithContext(req.Context())
		u := *req.URL
		u.Scheme, u.Host = in.URL.Scheme, in.URL.Host
		out.URL = &u
		out.Host = "" // the instance's address, not the logical name
		if len(tried) > 0 && req.GetBody != nil {
			if out.Body, err = req.GetBody(); err != nil {
				done(context.Canceled)
				return nil, err
			}
		}

		start := t.now()
		in.Begin()
		resp, err := t.base.RoundTrip(out)
		end := t.now()
		// The statistics end at the response headers: what a client-side
		// policy can compare is the time to first byte.
		canceled := req.Context().Err() != nil
		failed := err != nil || resp.StatusCode >= 500
		in.End(end.Sub(start), failed && !canceled, end)
		switch {
		case canceled:
			done(context.Canceled) // the caller gave up: no verdict on the instance
		case err != nil:
			done(err)
		case failed:
			done(errFailureStatus)
		default:
			done(nil)
		}

		if err != nil && retry && len(tried) == 0 && unreached(err) && !canceled && len(t.pool) > 1 {
			tried = append(tried, in)
			continue
		}
		return resp, err
	}
}

// pick chooses an available instance not in tried, and takes its breaker's
// permission. done must be called with the outcome.
func (t *Transport) pick(req *http.Request, tried []*balancer.Instance) (*balancer.Instance, func(error), error) {
	// Mirror each breaker onto its instance's flags, so that the policy
	// skips instances whose breaker refuses. Ready also turns an open
	// breaker whose time is up half-open, so recovery needs no timer.
	for _, in := range t.pool {
		in.SetFlag(balancer.BreakerOpen, !t.breakers[in].Ready())
	}
	pool := t.pool
	if len(tried) > 0 {
		pool = without(t.pool, tried)
	}
	for {
		in, err := t.bal.Pick(req, pool)
		if err != nil {
			return nil, nil, err
		}
		done, err := t.breakers[in].Allow()
		if err == nil {
			return in, done, nil
		}
		// The breaker changed its mind since Ready (its last probe slot
		// went to a concurrent request): skip it.
		in.SetFlag(balancer.BreakerOpen, true)
	}
}

// CloseIdleConnections closes the idle connections of Base, if it keeps
// any; http.Client.CloseIdleConnections calls it.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// InstanceState is a snapshot of one instance, for logs and tests.
type InstanceState struct {
	URL      string
	Breaker  breaker.State
	Requests uint64
	Failures uint64
	Latency  time.Duration
}

// Instances returns a snapshot of every instance, in the order of
// Settings.Instances.
func (t *Transport) Instances() []InstanceState {
	out := make([]InstanceState, 0, len(t.pool))
	for _, in := range t.pool {
		out = append(out, InstanceState{
			URL:      in.URL.String(),
			Breaker:  t.breakers[in].State(),
			Requests: in.Requests(),
			Failures: in.Failures(),
			Latency:  in.Latency(),
		})
	}
	return out
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	}
	return false
}

// unreached reports whether err happened before anything was sent: the
// connection could not be made.
func unreached(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func without(pool, skip []*balancer.Instance) []*balancer.Instance {
	out := make([]*balancer.Instance, 0, len(pool))
	for _, in := range pool {
		keep := true
		for _, s := range skip {
			keep = keep && in != s
		}
		if keep {
			out = append(out, in)
		}
	}
	return out
}

func main() {
	log.SetFlags(0)
	// Stand-in instances: one healthy, one failing, one dead.
	var urls []string
	for _, s := range []struct {
		name  string
		fault gatewaytest.Fault
	}{{"healthy", gatewaytest.Fault{}}, {"failing", gatewaytest.Fault{Status: 500}}, {"dead", gatewaytest.Fault{}}} {
		b, err := gatewaytest.StartFaultBackend(s.name, s.fault)
		if err != nil {
			log.Fatal(err)
		}
		defer b.Close()
		if s.name == "dead" {
			b.Kill()
		}
		urls = append(urls, b.URL())
		fmt.Printf("instance %-7s on %s\n", s.name, b.URL())
	}

	tr, err := NewTransport(Settings{
		Instances: urls,
		Breaker:   breaker.Settings{ConsecutiveFailures: 3, OpenTimeout: 30 * time.Second},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	var line []string
	errs := 0
	for i := 1; i <= 40; i++ {
		// The host names the service; the Transport chooses the instance.
		resp, err := client.Get("http://users/api/v1/users/me")
		if err != nil {
			line = append(line, "error")
			fmt.Println("  error:", err)
			errs++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		line = append(line, fmt.Sprintf("%d:%s", resp.StatusCode, resp.Header.Get("X-Backend")))
		if i%8 == 0 {
			fmt.Println(strings.Join(line, " "))
			line = line[:0]
		}
	}
	fmt.Println("\ninstance                   breaker    requests  failures")
	for _, s := range tr.Instances() {
		fmt.Printf("%-26s %-10s %8d  %8d\n", s.URL, s.Breaker, s.Requests, s.Failures)
	}
	fmt.Printf("\n%d of 40 requests got an error: attempts on the dead instance were sent again to another one,\n"+
		"and the failing instance's 500s stopped once its breaker opened.\n", errs)
}
