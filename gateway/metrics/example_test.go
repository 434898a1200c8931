package metrics_test

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyairtable/api-gateway/gateway/metrics"
)

func Example() {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		panic(err)
	}
	// http.Handle("/metrics", m.Handler(reg)) serves them.

	// The gateway records each request by route name, never by raw path.
	m.ObserveRequest("users", "users-svc", "GET", 200, 12*time.Millisecond, 0, 512)
	m.ObserveRequest("users", "users-svc", "GET", 201, 8*time.Millisecond, 0, 64)
	m.ObserveRequest("users", "users-svc", "GET", 503, 2*time.Millisecond, 0, 0)

	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gateway_requests_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "code" {
					fmt.Printf("code=%s %v\n", l.GetValue(), s.GetCounter().GetValue())
				}
			}
		}
	}
	// Output:
	// code=2xx 2
	// code=5xx 1
}

func ExampleMetrics_WebSocket() {
	reg := prometheus.NewRegistry()
	m, _ := metrics.New(reg)
	m.WebSocket(metrics.WSConnect, 1)
	m.WebSocket(metrics.WSConnect, 1)
	m.WebSocket(metrics.WSDisconnect, 1)

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "gateway_websocket_connections" {
			fmt.Println(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	// Output:
	// 1
}
