package balancer

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// pickCase is one policy ready to pick from one pool, with a request like
// the ones it will see in production.
type pickCase struct {
	name string
	b    Balancer
	pool []*Instance
	req  *http.Request
}

// pickCases builds every policy over a warmed-up pool of n instances with
// varied weights, latencies, error rates and in-flight counts.
func pickCases(tb testing.TB, n int) []pickCase {
	tb.Helper()
	now := time.Now()
	weights := make([]int, n)
	for i := range weights {
		weights[i] = 1 + i%4
	}
	pool := makePool(tb, n, weights...)
	for i, in := range pool {
		for k := range 3 {
			in.Begin()
			in.End(time.Duration(1+i%7)*time.Millisecond, k == 0 && i%5 == 0, now)
		}
		for range i % 3 {
			in.Begin()
		}
	}
	pool[n-1].SetJoined(now) // one instance in slow start
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "198.51.100.7:54321"
	req.Header.Set("X-User", "user-42")

	sticky, err := NewCookieSticky(&RoundRobin{}, CookieSettings{Secret: testSecret})
	if err != nil {
		tb.Fatal(err)
	}
	_, c, err := sticky.PickSticky(req, pool)
	if err != nil {
		tb.Fatal(err)
	}
	pinned := req.Clone(req.Context())
	pinned.Header.Set("Cookie", "theme=dark; "+c.Name+"="+c.Value)

	var cases []pickCase
	for _, name := range Algorithms() {
		b, err := New(name)
		if err != nil {
			tb.Fatal(err)
		}
		cases = append(cases, pickCase{name, b, pool, req})
	}
	return append(cases,
		pickCase{"consistent_hash_header", &ConsistentHash{Header: "X-User"}, pool, req},
		pickCase{"cookie_sticky_pinned", sticky, pool, pinned},
	)
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		for _, pc := range pickCases(b, n) {
			b.Run(fmt.Sprintf("%s/n=%d", pc.name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := pc.b.Pick(pc.req, pc.pool); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestPickAllocations holds every policy to zero allocations per pick once
// its per-pool state is built; the benchmarks report the same figure.
func TestPickAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates and drops sync.Pool items")
	}
	for _, n := range []int{3, 100} {
		for _, pc := range pickCases(t, n) {
			pc.b.Pick(pc.req, pc.pool) // build rings, ids, weights
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := pc.b.Pick(pc.req, pc.pool); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%s, n=%d: %v allocations per Pick, want 0", pc.name, n, allocs)
			}
		}
	}
}
