// Command custombalancer shows a load-balancing policy written outside the
// library and plugged into a gateway.Service: ZoneAware keeps a request in
// the caller's zone (named by a request header) when an instance there is
// available, and otherwise falls back to a round robin over every
// available instance.
//
//	go run ./examples/custombalancer          # walk-through, then exit
//	go run ./examples/custombalancer -serve   # walk-through, then serve on 127.0.0.1:8002 until Ctrl-C
//
// The program starts four stand-in instances on 127.0.0.1, two in zone
// eu-1 and two in eu-2, puts the gateway in front of them and prints which
// instance answers requests from each zone, then again after an eu-1
// instance dies and after the other one is marked unhealthy. With -serve,
// try curl -H 'X-Zone: eu-2' http://127.0.0.1:8002/api/orders.
//
// A policy is any type with the balancer.Balancer method
//
//	Pick(r *http.Request, pool []*balancer.Instance) (*balancer.Instance, error)
//
// which must not block, must be safe for concurrent use, must not modify
// pool, must skip instances that are not Available (health checks, circuit
// breakers and draining flag them) and returns balancer.ErrNoInstance when
// none is left. When an attempt cannot reach its instance the gateway asks
// again with the tried instances left out of pool, so a zone whose
// instances are down falls back on its own.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// ZoneAware is a balancer.Balancer that prefers instances in the caller's
// zone. Within the zone, and in the fallback over all instances, it takes
// turns (round robin), each zone with its own turn counter.
//
// It is safe for concurrent use, holds no lock, and Pick does not allocate.
// Create one with NewZoneAware; it is immutable afterwards.
type ZoneAware struct {
	header string
	zones  map[string]string         // instance host:port → zone
	turns  map[string]*atomic.Uint64 // zone → its counter; "" for the fallback
}

// NewZoneAware returns a ZoneAware that reads the caller's zone from header
// (if empty, "X-Zone") and knows each instance's zone from zones, keyed by
// the instance's host:port (balancer.Instance.String). Instances missing
// from zones are in no zone: they serve only the fallback. zones is copied.
func NewZoneAware(header string, zones map[string]string) *ZoneAware {
	if header == "" {
		header = "X-Zone"
	}
	b := &ZoneAware{
		// Canonical once here, so that Header.Get does no work per pick.
		header: http.CanonicalHeaderKey(header),
		zones:  make(map[string]string, len(zones)),
		turns:  map[string]*atomic.Uint64{"": new(atomic.Uint64)},
	}
	for addr, zone := range zones {
		b.zones[addr] = zone
		if b.turns[zone] == nil {
			b.turns[zone] = new(atomic.Uint64)
		}
	}
	return b
}

// Pick implements balancer.Balancer. r may be nil (no zone preference).
func (b *ZoneAware) Pick(r *http.Request, pool []*balancer.Instance) (*balancer.Instance, error) {
	if r != nil {
		// A zone nobody is in has no counter: it goes straight to the
		// fallback, and an unknown header value cannot grow any state.
		if zone := r.Header.Get(b.header); zone != "" && b.turns[zone] != nil {
			if in := b.next(pool, zone); in != nil {
				return in, nil
			}
		}
	}
	if in := b.next(pool, ""); in != nil {
		return in, nil
	}
	return nil, balancer.ErrNoInstance
}

// next returns the next available instance of zone in turn ("" means any
// zone), or nil if there is none. Two passes over pool, counting then
// choosing, keep it free of allocation.
func (b *ZoneAware) next(pool []*balancer.Instance, zone string) *balancer.Instance {
	n := 0
	for _, in := range pool {
		if b.eligible(in, zone) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	k := int((b.turns[zone].Add(1) - 1) % uint64(n))
	var last *balancer.Instance
	for _, in := range pool {
		if !b.eligible(in, zone) {
			continue
		}
		if k == 0 {
			return in
		}
		k--
		last = in
	}
	// An instance became unavailable between the passes; any eligible
	// one will do.
	return last
}

func (b *ZoneAware) eligible(in *balancer.Instance, zone string) bool {
	return in.Available() && (zone == "" || b.zones[in.URL.Host] == zone)
}

// newGateway puts the orders service, balanced by zone, behind /api/orders.
func newGateway(pool []*balancer.Instance, zones map[string]string, logger *slog.Logger) (*gateway.Gateway, error) {
	return gateway.New(gateway.Config{
		Services: []gateway.Service{{
			Name:      "orders",
			Instances: pool,
			Balancer:  NewZoneAware("X-Zone", zones),
			Timeout:   5 * time.Second,
		}},
		Routes: []gateway.Route{{Name: "orders", Prefix: "/api/orders", Service: "orders", Public: true}},
		Server: gateway.ServerSettings{ShutdownDelay: -1},
		Logger: logger,
	})
}

func main() {
	serve := flag.Bool("serve", false, "keep serving after the walk-through, until Ctrl-C")
	addr := flag.String("addr", "127.0.0.1:8002", "listen address with -serve")
	flag.Parse()
	log.SetFlags(0)

	// Stand-in instances; in real use these are your service's addresses
	// and zones, from configuration or discovery.
	zones := map[string]string{}
	var pool []*balancer.Instance
	backends := map[string]*gatewaytest.FaultBackend{}
	for _, name := range []string{"eu-1a", "eu-1b", "eu-2a", "eu-2b"} {
		b, err := gatewaytest.StartFaultBackend(name, gatewaytest.Fault{})
		if err != nil {
			log.Fatal(err)
		}
		defer b.Close()
		backends[name] = b
		in := balancer.MustInstance(b.URL(), 1)
		pool = append(pool, in)
		zones[in.String()] = name[:4]
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	g, err := newGateway(pool, zones, logger)
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

	base := "http://" + ln.Addr().String()
	show := func(title string) {
		fmt.Println(title)
		for _, zone := range []string{"eu-1", "eu-2", ""} {
			fmt.Printf("  %-8s ->", "zone "+orDash(zone))
			for range 4 {
				fmt.Print(" ", call(base+"/api/orders", zone))
			}
			fmt.Println()
		}
	}
	show("all instances up:")
	backends["eu-1a"].Kill()
	show("eu-1a killed (its attempts fail to connect and are retried elsewhere, then its breaker opens):")
	pool[1].SetFlag(balancer.Unhealthy, true)
	show("eu-1b marked unhealthy too (eu-1 falls back to every available instance):")

	if *serve {
		pool[1].SetFlag(balancer.Unhealthy, false)
		backends["eu-1a"].Revive()
		fmt.Printf("\nall back up; serving on %s until Ctrl-C\n  curl -H 'X-Zone: eu-2' %s/api/orders\n", base, base)
	} else {
		stop()
	}
	if err := <-served; err != nil {
		log.Fatal(err)
	}
}

// call sends one request from zone and names the instance that answered.
func call(url, zone string) string {
	req, _ := http.NewRequest("GET", url, nil)
	if zone != "" {
		req.Header.Set("X-Zone", zone)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error"
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if name := resp.Header.Get("X-Backend"); name != "" {
		return name
	}
	return strings.ToLower(http.StatusText(resp.StatusCode))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
