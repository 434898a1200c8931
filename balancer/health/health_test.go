package health

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/pyairtable/api-gateway/balancer"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func randFloat() float64 { return rand.Float64() }

// pool builds n distinct instances, all available.
func pool(n int) []*balancer.Instance {
	p := make([]*balancer.Instance, n)
	for i := range p {
		p[i] = balancer.MustInstance("http://10.0.0."+strconv.Itoa(i+1)+":80", 1)
	}
	return p
}

func TestInPanic(t *testing.T) {
	tests := []struct {
		size, down, threshold int
		want                  bool
	}{
		{0, 0, 50, false},
		{4, 0, 50, false},
		{4, 2, 50, false}, // exactly half available
		{4, 3, 50, true},
		{3, 2, 50, true},
		{3, 1, 50, false},
		{1, 1, 50, true},
		{4, 4, 0, false}, // disabled
		{4, 1, 80, true},
		{5, 1, 80, false},
	}
	for _, tt := range tests {
		p := pool(tt.size)
		for i := range tt.down {
			flag := balancer.Unhealthy
			if i%2 == 1 {
				flag = balancer.Ejected
			}
			p[i].SetFlag(flag, true)
		}
		if got := InPanic(p, tt.threshold); got != tt.want {
			t.Errorf("InPanic(%d of %d down, %d%%) = %v, want %v", tt.down, tt.size, tt.threshold, got, tt.want)
		}
	}
}

func BenchmarkInPanic(b *testing.B) {
	p := pool(8)
	p[0].SetFlag(balancer.Ejected, true)
	b.ReportAllocs()
	for b.Loop() {
		if InPanic(p, DefaultPanicThreshold) {
			b.Fatal("InPanic() = true, want false")
		}
	}
}
