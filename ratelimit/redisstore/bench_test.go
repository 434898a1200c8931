package redisstore_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

// BenchmarkAllow measures one decision: a script round trip on loopback.
// It is skipped when redis-server is not installed.
func BenchmarkAllow(b *testing.B) {
	srv := redistest.Start(b)
	client, err := redisstore.NewClient(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.Close() })
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "198.51.100." + strconv.Itoa(i)
	}
	for _, k := range kinds {
		l, err := k.new(client, redisstore.Settings{
			Settings: ratelimit.Settings{Limit: 1000, Window: time.Second},
			Prefix:   "bench:" + k.name + ":", // the two algorithms store different types
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := l.Allow(ctx, keys[i%len(keys)], 1); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(k.name+"/parallel", func(b *testing.B) {
			var next atomic.Uint32
			b.ReportAllocs()
			b.SetParallelism(4) // round trips wait on the network, not the CPU
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 97
				for pb.Next() {
					if _, err := l.Allow(ctx, keys[i%len(keys)], 1); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}
