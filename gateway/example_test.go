package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
)

// A gateway in front of one backend: a public route, and a route that
// needs authentication (none is configured, so it answers 401).
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "users saw %s", r.URL.Path)
	}))
	defer backend.Close()

	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{
			Name:      "users",
			Instances: []*balancer.Instance{balancer.MustInstance(backend.URL, 1)},
		}},
		Routes: []gateway.Route{
			{Prefix: "/api/v1/users", Service: "users", Public: true},
			{Prefix: "/api/v1/admin", Service: "users"},
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()

	for _, path := range []string{"/api/v1/users/me", "/api/v1/admin/x", "/nowhere"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"), len(body) > 0)
	}
	// Output:
	// 200 text/plain; charset=utf-8 true
	// 401 application/problem+json true
	// 404 application/problem+json true
}

// Resolve tells where a request would go without sending it.
func ExampleGateway_Resolve() {
	g, _ := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "files", Instances: []*balancer.Instance{balancer.MustInstance("http://127.0.0.1:8092", 1)}}},
		Routes:   []gateway.Route{{Name: "files", Prefix: "/api/v1/files", Service: "files", StripPrefix: true}},
		Logger:   slog.New(slog.DiscardHandler),
	})
	res := g.Resolve("GET", "", "/api/v1/files/../files/a.txt")
	fmt.Println(res.Status, res.Route.Name, res.Service, res.Path)
	// Output: 200 files files /a.txt
}

// Access logs through NewAccessLog are encoded by the gateway itself,
// without allocating; AsyncWriter keeps a slow sink off the request path.
// The query string never reaches the log.
func ExampleNewAccessLog() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	defer backend.Close()

	var sink bytes.Buffer
	out := gateway.NewAsyncWriter(&sink, 0)
	g, err := gateway.New(gateway.Config{
		Services:  []gateway.Service{{Name: "items", Instances: []*balancer.Instance{balancer.MustInstance(backend.URL, 1)}}},
		Routes:    []gateway.Route{{Name: "items", Prefix: "/api/items", Service: "items", Public: true}},
		Logger:    slog.New(slog.DiscardHandler),
		AccessLog: gateway.NewAccessLog(out, "json"),
	})
	if err != nil {
		panic(err)
	}
	g.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/api/items/42?api_key=secret", nil))
	out.Close() // writes out what is buffered; sink is ours again

	var line struct {
		Msg, Route, Service, Path string
		Status                    int
	}
	json.Unmarshal(sink.Bytes(), &line)
	fmt.Println(line.Msg, line.Route, line.Service, line.Path, line.Status)
	// Output: request items items /api/items/42 200
}
