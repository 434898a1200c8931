package discovery_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/pyairtable/api-gateway/discovery"
)

func ExampleStatic() {
	src := discovery.Static{
		{URL: "http://10.0.0.2:8080"},
		{URL: "http://10.0.0.1:8080", Weight: 3},
		{URL: "HTTP://10.0.0.2:8080/"}, // the same instance, written differently
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan []discovery.Endpoint)
	go src.Watch(ctx, ch)
	for _, ep := range <-ch {
		fmt.Println(ep.URL, ep.Weight)
	}
	// Output:
	// http://10.0.0.1:8080 3
	// http://10.0.0.2:8080 1
}

func ExampleRegistry() {
	reg := discovery.NewRegistry(discovery.RegistrySettings{
		APIKey: "admin-key",
		Now:    func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) },
	})
	admin := httptest.NewServer(reg) // the gateway mounts it on its admin port
	defer admin.Close()

	do := func(method, body string) {
		req, _ := http.NewRequest(method, admin.URL+"/registry/services/users/instances", strings.NewReader(body))
		req.Header.Set("X-Admin-Key", "admin-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Println(strings.TrimSpace(fmt.Sprint(resp.StatusCode, " ", string(b))))
	}
	do(http.MethodPost, `{"url": "http://10.0.0.7:8080", "ttl": "15s"}`)
	do(http.MethodPost, `{"url": "http://10.0.0.7:8080", "ttl": "15s"}`) // heartbeat

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan []discovery.Endpoint)
	go reg.Source("users").Watch(ctx, ch)
	fmt.Println("source:", (<-ch)[0].URL)

	do(http.MethodDelete, `{"url": "http://10.0.0.7:8080"}`)
	fmt.Println("source:", len(<-ch), "endpoints")
	// Output:
	// 201 {"url":"http://10.0.0.7:8080","weight":1,"ttl":"15s","expires":"2025-01-01T00:00:15Z"}
	// 200 {"url":"http://10.0.0.7:8080","weight":1,"ttl":"15s","expires":"2025-01-01T00:00:15Z"}
	// source: http://10.0.0.7:8080
	// 204
	// source: 0 endpoints
}
