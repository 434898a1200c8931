package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyairtable/api-gateway/gateway/metrics"
)

var benchRoutes = []string{"users", "orders", "items", "search"}

func BenchmarkObserveRequest(b *testing.B) {
	m, _ := newMetrics(b, metrics.Settings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			m.ObserveRequest(benchRoutes[i&3], "svc", "GET", 200, 3*time.Millisecond, 128, 4096)
		}
	})
}

func BenchmarkObserveRequestSerial(b *testing.B) {
	m, _ := newMetrics(b, metrics.Settings{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		m.ObserveRequest(benchRoutes[i&3], "svc", "GET", 200, 3*time.Millisecond, 128, 4096)
	}
}

// BenchmarkWithLabelValues does ObserveRequest's work without the cache,
// resolving the four children with WithLabelValues on every call.
func BenchmarkWithLabelValues(b *testing.B) {
	lv := []string{"route", "service", "method", "code"}
	count := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "h"}, lv)
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d", Help: "h"}, lv)
	req := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "q", Help: "h"}, []string{"route"})
	resp := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "r", Help: "h"}, []string{"route"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			r := benchRoutes[i&3]
			count.WithLabelValues(r, "svc", "GET", "2xx").Inc()
			dur.WithLabelValues(r, "svc", "GET", "2xx").Observe(0.003)
			req.WithLabelValues(r).Observe(128)
			resp.WithLabelValues(r).Observe(4096)
		}
	})
}

func BenchmarkObserveAttempt(b *testing.B) {
	m, _ := newMetrics(b, metrics.Settings{})
	insts := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			m.ObserveAttempt("svc", insts[i&3], 200, time.Millisecond)
		}
	})
}

func BenchmarkInFlight(b *testing.B) {
	m, _ := newMetrics(b, metrics.Settings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.InFlight("users", 1)
			m.InFlight("users", -1)
		}
	})
}

func BenchmarkBalancerPick(b *testing.B) {
	m, _ := newMetrics(b, metrics.Settings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.BalancerPick("svc", "10.0.0.1:80")
		}
	})
}

func BenchmarkRateLimit(b *testing.B) {
	m, _ := newMetrics(b, metrics.Settings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.RateLimit("per-ip", true)
		}
	})
}
