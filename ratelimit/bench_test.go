package ratelimit_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/ratelimit"
)

// BenchmarkAllow measures the decision path for keys already tracked, from
// all Ps at once: the steady state of a gateway. It must not allocate.
func BenchmarkAllow(b *testing.B) {
	const nkeys = 4096
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "198.51.100." + strconv.Itoa(i)
	}
	for _, c := range constructors {
		b.Run(c.name, func(b *testing.B) {
			l := mustNew(b, c.name, ratelimit.Settings{Limit: 1000, Window: time.Second})
			ctx := context.Background()
			for _, k := range keys {
				_, _ = l.Allow(ctx, k, 1)
			}
			var next atomic.Uint32
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := next.Add(1) * 7919
				for pb.Next() {
					i++
					_, _ = l.Allow(ctx, keys[i%nkeys], 1)
				}
			})
		})
	}
}

// BenchmarkAllowOneKey is the worst case for sharding: every goroutine
// contends for the same key and so the same shard lock.
func BenchmarkAllowOneKey(b *testing.B) {
	for _, c := range constructors {
		b.Run(c.name, func(b *testing.B) {
			l := mustNew(b, c.name, ratelimit.Settings{Limit: 1000, Window: time.Second})
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = l.Allow(ctx, "hot", 1)
				}
			})
		})
	}
}

// BenchmarkFlood measures new keys arriving into a full table, each one
// evicting another: a scan of random source addresses.
func BenchmarkFlood(b *testing.B) {
	const nkeys = 1 << 16
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "203.0.113." + strconv.Itoa(i)
	}
	for _, c := range constructors {
		b.Run(c.name, func(b *testing.B) {
			// A table far smaller than the key set: almost every request
			// inserts a key and evicts one.
			l := mustNew(b, c.name, ratelimit.Settings{Limit: 10, MaxKeys: 1024})
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				l.AllowAt(t0, keys[i%nkeys], 1)
				i++
			}
		})
	}
}
