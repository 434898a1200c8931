package health_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/balancer/health"
)

func ExampleOutlier() {
	pool := []*balancer.Instance{
		balancer.MustInstance("http://10.0.0.1:8080", 1),
		balancer.MustInstance("http://10.0.0.2:8080", 1),
		balancer.MustInstance("http://10.0.0.3:8080", 1),
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	o := health.NewOutlier(health.PassiveSettings{
		Now: func() time.Time { return now },
		OnEject: func(in *balancer.Instance, d time.Duration) {
			fmt.Println("ejected", in, "for", d)
		},
	})

	// The proxy reports every outcome; two instances fail five times in a
	// row, but at most half the pool may be ejected.
	for range 5 {
		o.Observe(pool[0], pool, true)
		o.Observe(pool[1], pool, true)
		o.Observe(pool[2], pool, false)
	}
	fmt.Println(pool[0].Flags(), pool[1].Flags(), pool[2].Flags())
	fmt.Println("panic:", health.InPanic(pool, health.DefaultPanicThreshold))

	now = now.Add(30 * time.Second)
	o.Tick(now, pool) // the gateway calls this from a ticker, or uses Run
	fmt.Println(pool[0].Flags(), "slow start from", pool[0].Joined().UTC().Format(time.TimeOnly))
	// Output:
	// ejected 10.0.0.1:8080 for 30s
	// ejected up up
	// panic: false
	// up slow start from 00:00:30
}

func ExampleChecker() {
	var down atomic.Bool
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer backend.Close()
	in := balancer.MustInstance(backend.URL, 1)

	c := health.NewChecker(health.ActiveSettings{
		Path: "/health",
		OnChange: func(_ *balancer.Instance, healthy bool) {
			fmt.Println("healthy:", healthy)
		},
	})
	// Run(ctx, pool) checks every instance on its interval; CheckOnce does
	// one round by hand.
	down.Store(true)
	for range 3 {
		c.CheckOnce(context.Background(), in)
	}
	fmt.Println(in.Flags())
	down.Store(false)
	for range 2 {
		c.CheckOnce(context.Background(), in)
	}
	fmt.Println(in.Flags())
	// Output:
	// healthy: false
	// unhealthy
	// healthy: true
	// up
}
