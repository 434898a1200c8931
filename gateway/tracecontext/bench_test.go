package tracecontext

import (
	"net/http"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Parse(specExample); !ok {
			b.Fatal("Parse failed")
		}
	}
}

func BenchmarkStart(b *testing.B) {
	benches := []struct {
		name string
		h    http.Header
	}{
		{"continue", header("traceparent", specExample)},
		{"continue+state", header("traceparent", specExample, "tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")},
		{"continue+state2lines", header("traceparent", specExample, "tracestate", "congo=t61rcWkgMzE", "tracestate", "rojo=00f067aa0ba902b7")},
		{"new", header()},
		{"malformed", header("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Start(bb.h)
			}
		})
	}
}

func BenchmarkStartParallel(b *testing.B) {
	h := header("traceparent", specExample, "tracestate", "congo=t61rcWkgMzE")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			Start(h)
		}
	})
}

func BenchmarkAppendTraceparent(b *testing.B) {
	c := New()
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendTraceparent(buf[:0])
	}
}

func BenchmarkTraceparent(b *testing.B) {
	c := New()
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Traceparent()
	}
}
