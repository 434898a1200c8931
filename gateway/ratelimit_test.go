package gateway_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

func memLimiter(t *testing.T, limit int, window time.Duration) ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.NewSlidingWindow(ratelimit.Settings{Limit: limit, Window: window})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Each header choice sends what it names on allowed responses, and every
// choice answers a 429 with both forms.
func TestRateLimitHeaderChoices(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	ietf := []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"}
	legacy := []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
	for _, c := range []struct {
		name     string
		choice   gateway.RateLimitHeaders
		has, not []string
	}{
		{"both", gateway.RateLimitHeadersBoth, append(ietf, legacy...), nil},
		{"ietf", gateway.RateLimitHeadersIETF, ietf, legacy},
		{"legacy", gateway.RateLimitHeadersLegacy, legacy, ietf},
		{"on_denial", gateway.RateLimitHeadersOnDenial, nil, append(ietf, legacy...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, base := newGateway(t, gateway.Config{
				Services:         []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
				Routes:           []gateway.Route{{Prefix: "/api", Service: "svc", Public: true}},
				RateLimits:       []gateway.RateLimitPolicy{{Name: "per_ip", Limiter: memLimiter(t, 1, time.Minute), Key: gateway.KeyIP, Limit: 1, Window: time.Minute}},
				RateLimitHeaders: c.choice,
			})
			res := get(t, base+"/api/x")
			if res.status != 200 {
				t.Fatalf("status %d", res.status)
			}
			for _, k := range c.has {
				if res.header.Get(k) == "" {
					t.Errorf("allowed response lacks %s", k)
				}
			}
			for _, k := range c.not {
				if v := res.header.Get(k); v != "" {
					t.Errorf("allowed response has %s: %s", k, v)
				}
			}
			res = get(t, base+"/api/x")
			checkProblem(t, res, 429, "rate-limited")
			for _, k := range append(ietf, legacy...) {
				if res.header.Get(k) == "" {
					t.Errorf("429 lacks %s", k)
				}
			}
		})
	}
}

func TestRateLimitPerIPAnd429(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	_, base := newGateway(t, gateway.Config{
		Services:   []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:     []gateway.Route{{Prefix: "/api", Service: "svc"}},
		RateLimits: []gateway.RateLimitPolicy{{Name: "per_ip", Limiter: memLimiter(t, 5, time.Minute), Key: gateway.KeyIP, Limit: 5, Window: time.Minute}},
	})
	for i := 0; i < 5; i++ {
		res := get(t, base+"/api/x")
		if res.status != 200 {
			t.Fatalf("request %d: %d", i, res.status)
		}
		h := res.header
		if h.Get("RateLimit-Limit") != "5" || h.Get("RateLimit-Remaining") != strconv.Itoa(4-i) || h.Get("RateLimit-Policy") != "5;w=60" ||
			h.Get("X-RateLimit-Remaining") != strconv.Itoa(4-i) || h.Get("RateLimit-Reset") == "" {
			t.Errorf("request %d headers: %v", i, h)
		}
	}
	hits := b.Hits()
	res := get(t, base+"/api/x")
	checkProblem(t, res, 429, "rate-limited")
	if ra, _ := strconv.Atoi(res.header.Get("Retry-After")); ra < 1 {
		t.Errorf("Retry-After = %q", res.header.Get("Retry-After"))
	}
	if res.header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("429 RateLimit-Remaining = %q", res.header.Get("RateLimit-Remaining"))
	}
	if b.Hits() != hits {
		t.Error("a limited request reached the backend")
	}
	// Health endpoints are never limited.
	for i := 0; i < 20; i++ {
		if res := get(t, base+"/health"); res.status != 200 {
			t.Fatalf("/health limited: %d", res.status)
		}
	}
}

func TestRateLimitPerUserAfterAuth(t *testing.T) {
	f := newAuthGateway(t, func(c *gateway.Config) {
		c.RateLimits = []gateway.RateLimitPolicy{{Name: "per_user", Limiter: memLimiter(t, 3, time.Minute), Key: gateway.KeyUser, Limit: 3, Window: time.Minute}}
	})
	alice := mint(t, authn.MintClaims{Subject: "alice"})
	bob := mint(t, authn.MintClaims{Subject: "bob"})
	status := func(tok string) int {
		s, _, _ := call(t, "GET", f.base+"/api/v1/workspaces", map[string]string{"Authorization": "Bearer " + tok})
		return s
	}
	for i := 0; i < 3; i++ {
		if s := status(alice); s != 200 {
			t.Fatalf("alice %d: %d", i, s)
		}
	}
	if s := status(alice); s != 429 {
		t.Errorf("alice over her limit: %d, want 429", s)
	}
	if s := status(bob); s != 200 {
		t.Errorf("bob has his own allowance: %d, want 200", s)
	}
}

// TestRateLimitSharedAcrossReplicas runs two gateways sharing one real
// redis-server: together they enforce one combined limit.
func TestRateLimitSharedAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	b := gatewaytest.NewBackend(t, "svc", nil)
	const limit = 100
	var bases []string
	for i := 0; i < 2; i++ {
		client, err := redisstore.NewClient(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		l, err := redisstore.NewSlidingWindow(client, redisstore.Settings{Settings: ratelimit.Settings{Limit: limit, Window: time.Minute}, Prefix: "gw:test:"})
		if err != nil {
			t.Fatal(err)
		}
		_, base := newGateway(t, gateway.Config{
			Services:   []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
			Routes:     []gateway.Route{{Prefix: "/api", Service: "svc"}},
			RateLimits: []gateway.RateLimitPolicy{{Name: "global", Limiter: l, Key: gateway.KeyGlobal, Limit: limit, Window: time.Minute}},
		})
		bases = append(bases, base)
	}
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 75; i++ {
				resp, err := http.Get(bases[(w+i)%2] + "/api/x")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if allowed < limit*98/100 || allowed > limit*102/100 {
		t.Errorf("two replicas allowed %d of 300 requests, want %d ±2%%", allowed, limit)
	}
}
