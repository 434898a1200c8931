// Command custom assembles a gateway in Go from the library's parts, without
// YAML and without package gateway/config: a service of three instances
// balanced by least connections, per-instance circuit breakers with settings
// of its own, a per-client-IP token bucket, and HS256 JWT authentication
// with a public route and a route reserved to the "admin" role.
//
//	go run ./examples/custom          # walk-through, then exit
//	go run ./examples/custom -serve   # walk-through, then serve on 127.0.0.1:8001 until Ctrl-C
//
// The program starts three stand-in instances on 127.0.0.1 and the gateway
// in front of them, then sends requests to it and prints what happens:
// which instance answered, 401/403/200 on the protected route, and the 429
// once the client's allowance is spent. With -serve it keeps serving; the
// protected route then wants a token signed with $JWT_SECRET (at least 32
// bytes; a random secret is used when it is unset).
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
	"github.com/pyairtable/api-gateway/ratelimit"
)

// settings is what the program chooses at run time; the rest of the
// gateway is fixed in newGateway.
type settings struct {
	// Instances are the base URLs of the catalog service's instances.
	Instances []string
	// Secret is the HS256 key shared with whoever issues the tokens.
	Secret []byte
	// PerIP requests per Window are allowed to each client address, in a
	// burst of up to PerIP.
	PerIP  int
	Window time.Duration
	// Now is the clock of the limiter, the token checks and the breakers.
	// If nil, time.Now.
	Now func() time.Time
	// Logger receives the gateway's operational logs. If nil,
	// slog.Default().
	Logger *slog.Logger
}

// newGateway builds the gateway from plain Go values.
func newGateway(s settings) (*gateway.Gateway, error) {
	// One limiter keyed by client IP: each address has a bucket of PerIP
	// requests, refilled at PerIP per Window.
	perIP, err := ratelimit.NewTokenBucket(ratelimit.Settings{Limit: s.PerIP, Window: s.Window, Now: s.Now})
	if err != nil {
		return nil, err
	}
	// Only HS256 is accepted: a token cannot choose a weaker algorithm.
	jwt, err := authn.NewJWT(authn.JWTSettings{Secret: s.Secret, Algorithms: []string{"HS256"}, Now: s.Now})
	if err != nil {
		return nil, err
	}
	pool := make([]*balancer.Instance, 0, len(s.Instances))
	for _, u := range s.Instances {
		in, err := balancer.NewInstance(u, 1)
		if err != nil {
			return nil, err
		}
		pool = append(pool, in)
	}
	return gateway.New(gateway.Config{
		Services: []gateway.Service{{
			Name:      "catalog",
			Instances: pool,
			// Least connections suits instances of equal capacity whose
			// requests vary in cost: a busy instance gets fewer new ones.
			Balancer: &balancer.LeastConnections{},
			Timeout:  5 * time.Second,
			CircuitBreaker: gateway.BreakerPolicy{Settings: breaker.Settings{
				// Trip faster than the default (5) and probe with a single
				// request: three instances can cover for one.
				ConsecutiveFailures: 3,
				FailureRatio:        0.3,
				MinRequests:         10,
				Window:              30 * time.Second,
				OpenTimeout:         5 * time.Second,
				MaxOpenTimeout:      time.Minute,
				HalfOpenRequests:    1,
			}},
		}},
		Routes: []gateway.Route{
			{Name: "catalog", Prefix: "/api/catalog", Methods: []string{"GET"}, Service: "catalog", Public: true},
			{Name: "admin", Prefix: "/api/admin", Service: "catalog", Roles: []string{"admin"}},
		},
		Auth: jwt,
		RateLimits: []gateway.RateLimitPolicy{{
			Name: "per_ip", Limiter: perIP, Key: gateway.KeyIP, Limit: s.PerIP, Window: s.Window,
		}},
		Server: gateway.ServerSettings{ShutdownDelay: -1},
		Now:    s.Now,
		Logger: s.Logger,
	})
}

func main() {
	serve := flag.Bool("serve", false, "keep serving after the walk-through, until Ctrl-C")
	addr := flag.String("addr", "127.0.0.1:8001", "listen address with -serve")
	flag.Parse()
	log.SetFlags(0)

	secret := []byte(os.Getenv("JWT_SECRET"))
	if len(secret) < 32 {
		secret = make([]byte, 32)
		rand.Read(secret)
	}
	// Stand-in instances; in real use these are your service's addresses.
	var urls []string
	for _, name := range []string{"catalog-1", "catalog-2", "catalog-3"} {
		// Each answers after 100ms, so that concurrent requests overlap.
		b, err := gatewaytest.StartFaultBackend(name, gatewaytest.Fault{Latency: 100 * time.Millisecond})
		if err != nil {
			log.Fatal(err)
		}
		defer b.Close()
		urls = append(urls, b.URL())
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := newGateway(settings{Instances: urls, Secret: secret, PerIP: 20, Window: time.Minute, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	listen := "127.0.0.1:0"
	if *serve {
		listen = *addr
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()

	walkThrough("http://"+ln.Addr().String(), secret)

	if *serve {
		fmt.Printf("\nserving on http://%s until Ctrl-C (127.0.0.1's allowance, spent above, refills at 20 a minute)\n", ln.Addr())
		fmt.Printf("  curl -i http://%s/api/catalog/items\n", ln.Addr())
	} else {
		stop()
	}
	if err := <-served; err != nil {
		log.Fatal(err)
	}
}

// walkThrough sends requests to the gateway at base and prints the answers.
func walkThrough(base string, secret []byte) {
	c := &http.Client{Timeout: 5 * time.Second}
	send := func(path, token string) (*http.Response, error) {
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			return nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	fmt.Println("public route: 9 concurrent requests, least connections spreads them:")
	var mu sync.Mutex
	var wg sync.WaitGroup
	tally := map[string]int{}
	for range 9 {
		wg.Go(func() {
			resp, err := send("/api/catalog/items", "")
			if err != nil {
				log.Fatal(err)
			}
			mu.Lock()
			tally[resp.Header.Get("X-Backend")]++
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, name := range slices.Sorted(maps.Keys(tally)) {
		fmt.Printf("  %s answered %d\n", name, tally[name])
	}

	fmt.Println("protected route (role admin):")
	viewer, _ := authn.MintHS256(secret, authn.MintClaims{Subject: "ada", Roles: []string{"viewer"}})
	admin, _ := authn.MintHS256(secret, authn.MintClaims{Subject: "grace", Roles: []string{"admin"}})
	for _, tc := range []struct{ who, token string }{{"no token", ""}, {"viewer token", viewer}, {"admin token", admin}} {
		resp, err := send("/api/admin/stats", tc.token)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("  GET /api/admin/stats with %-12s -> %d\n", tc.who, resp.StatusCode)
	}

	fmt.Println("rate limit (20 per minute per client IP):")
	for i := 13; i <= 40; i++ {
		resp, err := send("/api/catalog/items", "")
		if err != nil {
			log.Fatal(err)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			fmt.Printf("  request %d -> 429, Retry-After %ss\n", i, resp.Header.Get("Retry-After"))
			return
		}
	}
	log.Fatal(errors.New("the limit never applied"))
}
