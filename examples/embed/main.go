// Command embed shows the gateway used as a library: two services, routes
// and a middleware of the program's own, built in Go without YAML.
//
//	go run ./examples/embed
//	curl localhost:8000/api/v1/users/me
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:8000")
	if err != nil {
		log.Fatal(err)
	}
	// Stand-in backends; in real use these are your services' addresses.
	users := startBackend("users")
	orders := startBackend("orders")
	g, err := newGateway(users, orders)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on http://%s", ln.Addr())
	if err := g.Serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

// newGateway assembles the gateway: each service is a pool of instances,
// each route sends a path prefix to a service.
func newGateway(usersURL, ordersURL string) (*gateway.Gateway, error) {
	return gateway.New(gateway.Config{
		Services: []gateway.Service{
			{
				Name:      "users",
				Instances: []*balancer.Instance{balancer.MustInstance(usersURL, 1)},
				Timeout:   5 * time.Second,
			},
			{
				Name:      "orders",
				Instances: []*balancer.Instance{balancer.MustInstance(ordersURL, 1)},
				Balancer:  &balancer.RoundRobin{},
			},
		},
		Routes: []gateway.Route{
			// Routes are authenticated unless public; with no Config.Auth set,
			// only public routes are reachable (deny by default).
			{Name: "users", Prefix: "/api/v1/users", Service: "users", Public: true},
			{Name: "orders", Prefix: "/api/v1/orders", Methods: []string{"GET", "POST"}, Service: "orders", Public: true},
		},
		// The program's own middleware runs on every routed request.
		Middleware: []gateway.Middleware{poweredBy},
		Server:     gateway.ServerSettings{ShutdownDelay: time.Second},
	})
}

// poweredBy tags responses and shows the request id the gateway assigned.
func poweredBy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Embedded-By", "examples/embed")
		w.Header().Set("X-Seen-Request-ID", gateway.RequestID(r.Context()))
		next.ServeHTTP(w, r)
	})
}

func startBackend(name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s saw %s %s\n", name, r.Method, r.URL.Path)
	}))
	fmt.Fprintf(os.Stderr, "backend %s on %s\n", name, ln.Addr())
	return "http://" + ln.Addr().String()
}
