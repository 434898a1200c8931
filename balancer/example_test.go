package balancer_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
)

func ExampleRoundRobin() {
	pool := []*balancer.Instance{
		balancer.MustInstance("http://10.0.0.1:8080", 1),
		balancer.MustInstance("http://10.0.0.2:8080", 1),
		balancer.MustInstance("http://10.0.0.3:8080", 1),
	}
	pool[1].SetFlag(balancer.Unhealthy, true) // skipped until it recovers

	var b balancer.RoundRobin
	for range 4 {
		in, _ := b.Pick(nil, pool)
		fmt.Println(in)
	}
	// Output:
	// 10.0.0.1:8080
	// 10.0.0.3:8080
	// 10.0.0.3:8080
	// 10.0.0.1:8080
}

func ExampleWeightedRoundRobin() {
	pool := []*balancer.Instance{
		balancer.MustInstance("http://a:80", 5),
		balancer.MustInstance("http://b:80", 1),
		balancer.MustInstance("http://c:80", 1),
	}
	var b balancer.WeightedRoundRobin
	var seq []string
	for range 7 {
		in, _ := b.Pick(nil, pool)
		seq = append(seq, in.URL.Hostname())
	}
	fmt.Println(strings.Join(seq, " "))
	// Output: a a b a c a a
}

func ExampleNew() {
	b, err := balancer.New("least_connections")
	fmt.Printf("%T %v\n", b, err)

	_, err = balancer.New("fastest")
	fmt.Println(err)
	// Output:
	// *balancer.LeastConnections <nil>
	// balancer: unknown algorithm "fastest" (valid: round_robin, weighted_round_robin, least_connections, random, latency, health_score, consistent_hash)
}

func ExampleConsistentHash() {
	pool := []*balancer.Instance{
		balancer.MustInstance("http://10.0.0.1:8080", 1),
		balancer.MustInstance("http://10.0.0.2:8080", 1),
		balancer.MustInstance("http://10.0.0.3:8080", 1),
	}
	b := &balancer.ConsistentHash{Header: "X-Tenant"}
	pick := func(tenant string) *balancer.Instance {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Tenant", tenant)
		in, _ := b.Pick(r, pool)
		return in
	}
	first := pick("acme")
	fmt.Println("same tenant, same instance:", pick("acme") == first)

	first.SetFlag(balancer.Draining, true)
	fmt.Println("moved while its instance drains:", pick("acme") != first)
	// Output:
	// same tenant, same instance: true
	// moved while its instance drains: true
}

func ExampleCookieSticky() {
	pool := []*balancer.Instance{
		balancer.MustInstance("http://10.0.0.1:8080", 1),
		balancer.MustInstance("http://10.0.0.2:8080", 1),
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b, err := balancer.NewCookieSticky(&balancer.RoundRobin{}, balancer.CookieSettings{
		Secret: []byte("at least sixteen bytes of secret"),
		TTL:    time.Hour,
		Now:    func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}

	// A new client is balanced and pinned; the gateway sends the cookie.
	first, cookie, _ := b.PickSticky(httptest.NewRequest("GET", "/", nil), pool)
	fmt.Println(first, cookie.Name, cookie.MaxAge)

	// With the cookie, the client returns to its instance; nothing to set.
	for range 3 {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(cookie)
		in, renew, _ := b.PickSticky(r, pool)
		fmt.Println(in == first, renew == nil)
	}
	// Output:
	// 10.0.0.1:8080 gw_sticky 3600
	// true true
	// true true
	// true true
}
