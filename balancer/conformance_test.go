package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// implementations lists every Balancer of the package, by name.
func implementations(t *testing.T) []struct {
	name string
	new  func() Balancer
} {
	t.Helper()
	impls := []struct {
		name string
		new  func() Balancer
	}{}
	for _, name := range Algorithms() {
		impls = append(impls, struct {
			name string
			new  func() Balancer
		}{name, func() Balancer {
			b, err := New(name)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}})
	}
	sticky := func(next Balancer) func() Balancer {
		return func() Balancer {
			b, err := NewCookieSticky(next, CookieSettings{Secret: testSecret})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	return append(impls,
		struct {
			name string
			new  func() Balancer
		}{"cookie_sticky/round_robin", sticky(&RoundRobin{})},
		struct {
			name string
			new  func() Balancer
		}{"cookie_sticky/health_score", sticky(&HealthScore{})},
		struct {
			name string
			new  func() Balancer
		}{"consistent_hash/header", func() Balancer { return &ConsistentHash{Header: "x-user"} }},
	)
}

// conformanceRequest returns a request with a varying client IP and key
// header, and sometimes a sticky cookie from an earlier response.
func conformanceRequest(i int, cookie *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = fmt.Sprintf("192.0.2.%d:%d", i%250+1, 1024+i)
	r.Header.Set("X-User", fmt.Sprint("user-", i%37))
	if cookie != nil {
		r.AddCookie(cookie)
	}
	return r
}

// pickChecked picks and checks the Balancer contract: an available member
// of pool, or ErrNoInstance exactly when no instance is available. It
// returns the sticky cookie, if any, for the next request.
func pickChecked(t *testing.T, b Balancer, r *http.Request, pool []*Instance) (*Instance, *http.Cookie) {
	t.Helper()
	var (
		in     *Instance
		cookie *http.Cookie
		err    error
	)
	if s, ok := b.(Sticky); ok {
		in, cookie, err = s.PickSticky(r, pool)
	} else {
		in, err = b.Pick(r, pool)
	}
	anyUp := false
	for _, p := range pool {
		anyUp = anyUp || p.Available()
	}
	switch {
	case !anyUp:
		if !errors.Is(err, ErrNoInstance) || in != nil {
			t.Fatalf("Pick() = %v, %v; want nil, ErrNoInstance (no instance available)", in, err)
		}
	case err != nil:
		t.Fatalf("Pick() error = %v, want an instance (%d in pool, some available)", err, len(pool))
	case indexOf(pool, in) < 0:
		t.Fatalf("Pick() = %v, not a member of the pool", in)
	case !in.Available():
		t.Fatalf("Pick() = %v with flags %v, want an available instance", in, in.Flags())
	}
	return in, cookie
}

func TestConformance(t *testing.T) {
	flags := []Flag{Unhealthy, Ejected, BreakerOpen, Draining, Unhealthy | Draining}
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			t.Run("empty pool", func(t *testing.T) {
				b := impl.new()
				for _, pool := range [][]*Instance{nil, {}} {
					if in, err := b.Pick(conformanceRequest(0, nil), pool); !errors.Is(err, ErrNoInstance) || in != nil {
						t.Errorf("Pick(%d instances) = %v, %v; want nil, ErrNoInstance", len(pool), in, err)
					}
				}
			})
			t.Run("all unavailable", func(t *testing.T) {
				for _, n := range []int{1, 3, 12, 100} {
					b := impl.new()
					pool := makePool(t, n)
					for i, in := range pool {
						in.SetFlag(flags[i%len(flags)], true)
					}
					for i := range 20 {
						if in, err := b.Pick(conformanceRequest(i, nil), pool); !errors.Is(err, ErrNoInstance) || in != nil {
							t.Fatalf("n=%d: Pick() = %v, %v; want nil, ErrNoInstance", n, in, err)
						}
					}
				}
			})
			t.Run("only one available", func(t *testing.T) {
				for _, n := range []int{1, 2, 3, 11, 50} {
					b := impl.new()
					pool := makePool(t, n)
					up := n / 2
					for i, in := range pool {
						in.SetFlag(Ejected, i != up)
					}
					for i := range 50 {
						if in, err := b.Pick(conformanceRequest(i, nil), pool); err != nil || in != pool[up] {
							t.Fatalf("n=%d: Pick() = %v, %v; want %v", n, in, err, pool[up])
						}
					}
				}
			})
			t.Run("never unavailable", func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, 2))
				for _, n := range []int{2, 3, 11, 50} {
					b := impl.new()
					pool := makePool(t, n, 1, 3, 2, 5)
					var cookie *http.Cookie
					for i := range 400 {
						if i%50 == 0 {
							for _, in := range pool {
								in.SetFlag(flags[rng.IntN(len(flags))], rng.IntN(3) == 0)
							}
						}
						var in *Instance
						in, cookie = pickChecked(t, b, conformanceRequest(i, cookie), pool)
						if in != nil {
							in.Begin()
							in.End(time.Duration(1+rng.IntN(20))*time.Millisecond, rng.IntN(10) == 0, time.Now())
						}
					}
				}
			})
			t.Run("pool changes between calls", func(t *testing.T) {
				b := impl.new()
				all := makePool(t, 30, 2, 1, 3)
				rng := rand.New(rand.NewPCG(3, 4))
				var cookie *http.Cookie
				for i := range 600 {
					// A fresh slice of random size, membership and order, as
					// discovery would hand over after a change.
					pool := make([]*Instance, 1+rng.IntN(len(all)))
					for k, j := range rng.Perm(len(all))[:len(pool)] {
						pool[k] = all[j]
					}
					for _, in := range pool {
						in.SetFlag(Unhealthy, rng.IntN(4) == 0)
					}
					_, cookie = pickChecked(t, b, conformanceRequest(i, cookie), pool)
					if i%7 == 0 {
						cookie = nil
					}
				}
			})
			t.Run("nil request", func(t *testing.T) {
				b := impl.new()
				pool := makePool(t, 3)
				pickChecked(t, b, nil, pool)
			})
			t.Run("concurrent", func(t *testing.T) {
				checkNoGoroutineLeak(t)
				b := impl.new()
				pools := [2][]*Instance{makePool(t, 3, 1, 2, 3), makePool(t, 40, 2, 1)}
				var cur atomic.Pointer[[]*Instance]
				cur.Store(&pools[0])
				stop := make(chan struct{})
				var churn sync.WaitGroup
				churn.Go(func() {
					// Flip flags and membership while the pickers run.
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						p := pools[i%2]
						p[i%len(p)].SetFlag(BreakerOpen, i%3 == 0)
						cur.Store(&pools[(i/50)%2])
						time.Sleep(10 * time.Microsecond)
					}
				})
				var pickers sync.WaitGroup
				for g := range 4 {
					pickers.Go(func() {
						for i := range 500 {
							pool := *cur.Load()
							in, err := b.Pick(conformanceRequest(g*1000+i, nil), pool)
							if errors.Is(err, ErrNoInstance) {
								continue
							}
							if err != nil || indexOf(pool, in) < 0 {
								t.Errorf("Pick() = %v, %v; want a member of the pool", in, err)
								return
							}
							in.Begin()
							in.End(time.Millisecond, i%5 == 0, time.Now())
						}
					})
				}
				pickers.Wait()
				close(stop)
				churn.Wait()
			})
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"round_robin", "*balancer.RoundRobin"},
		{"weighted_round_robin", "*balancer.WeightedRoundRobin"},
		{"least_connections", "*balancer.LeastConnections"},
		{"random", "*balancer.Random"},
		{"latency", "*balancer.Latency"},
		{"health_score", "*balancer.HealthScore"},
		{"consistent_hash", "*balancer.ConsistentHash"},
	}
	for _, tt := range tests {
		b, err := New(tt.name)
		if err != nil || fmt.Sprintf("%T", b) != tt.want {
			t.Errorf("New(%q) = %T, %v; want %s", tt.name, b, err, tt.want)
		}
	}
	if got := len(Algorithms()); got != len(tests) {
		t.Errorf("len(Algorithms()) = %d, want %d", got, len(tests))
	}
	if _, err := New(DefaultAlgorithm); err != nil {
		t.Errorf("New(DefaultAlgorithm) error = %v", err)
	}
	for _, name := range []string{"", "roundrobin", "Round_Robin", "least_conn"} {
		b, err := New(name)
		if !errors.Is(err, ErrUnknownAlgorithm) || b != nil {
			t.Errorf("New(%q) = %v, %v; want ErrUnknownAlgorithm", name, b, err)
		}
	}
	_, err := New("bogus")
	want := `balancer: unknown algorithm "bogus" (valid: round_robin, weighted_round_robin, least_connections, random, latency, health_score, consistent_hash)`
	if err == nil || err.Error() != want {
		t.Errorf("New(%q) error = %v, want %s", "bogus", err, want)
	}
}

func TestLeastConnections(t *testing.T) {
	b := &LeastConnections{}
	tests := []struct {
		n, busy int
		lo, hi  float64 // bounds on the idle instances' share
	}{
		// Full scan: never a busy instance while an idle one is up.
		{n: 3, busy: 2, lo: 1, hi: 1},
		{n: 10, busy: 5, lo: 1, hi: 1},
		// Two choices: busy only when both are busy, 5/10 × 4/9 of the time.
		// A random one of the two would give 0.5.
		{n: 20, busy: 10, lo: 0.72, hi: 0.80},
		{n: 100, busy: 90, lo: 0.17, hi: 0.21}, // 1 - 0.9 × 89/99
	}
	for _, tt := range tests {
		pool := makePool(t, tt.n)
		for _, in := range pool[:tt.busy] {
			for range 5 {
				in.Begin()
			}
		}
		idle := 0
		const picks = 10000
		for range picks {
			in, err := b.Pick(nil, pool)
			if err != nil {
				t.Fatal(err)
			}
			if in.InFlight() == 0 {
				idle++
			}
		}
		if share := float64(idle) / picks; share < tt.lo || share > tt.hi {
			t.Errorf("n=%d, %d busy: idle share = %.3f, want in [%.2f, %.2f]", tt.n, tt.busy, share, tt.lo, tt.hi)
		}
	}
	// Ties are broken at random: idle instances share evenly.
	pool := makePool(t, 4)
	checkShares(t, "least_connections, all idle", shares(t, b, pool, 10000), []float64{0.25, 0.25, 0.25, 0.25}, 0.03)
}
