package balancer

import (
	"math"
	"strings"
	"testing"
	"time"
)

// sequence picks n times and names the picks by pool position: a, b, c...
func sequence(t *testing.T, b Balancer, pool []*Instance, n int) string {
	t.Helper()
	var sb strings.Builder
	for range n {
		in, err := b.Pick(nil, pool)
		if err != nil {
			t.Fatalf("Pick() error = %v", err)
		}
		sb.WriteByte(byte('a' + indexOf(pool, in)))
	}
	return sb.String()
}

// shares picks n times and returns each pool position's share of picks.
func shares(t *testing.T, b Balancer, pool []*Instance, n int) []float64 {
	t.Helper()
	s := make([]float64, len(pool))
	for range n {
		in, err := b.Pick(nil, pool)
		if err != nil {
			t.Fatalf("Pick() error = %v", err)
		}
		s[indexOf(pool, in)] += 1 / float64(n)
	}
	return s
}

func checkShares(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	for i := range want {
		if math.Abs(got[i]-want[i]) > tol {
			t.Errorf("%s: share of instance %c = %.4f, want %.4f±%.3f (all: %.4f)", what, 'a'+i, got[i], want[i], tol, got)
			return
		}
	}
}

func TestWeightedRoundRobinSmoothSequence(t *testing.T) {
	// Sequences produced by nginx's ngx_http_upstream_get_peer.
	tests := []struct {
		weights []int
		want    string
	}{
		{[]int{5, 1, 1}, "aabacaa"},
		{[]int{4, 2, 1}, "abacaba"},
		{[]int{2, 1}, "aba"},
		{[]int{1, 1, 1}, "abc"},
		{[]int{0, 0}, "ab"}, // weights below 1 count as 1
	}
	for _, tt := range tests {
		b := &WeightedRoundRobin{}
		pool := makePool(t, len(tt.weights), tt.weights...)
		for i := range pool {
			pool[i].Weight = tt.weights[i]
		}
		// Three cycles: the sequence must repeat exactly.
		want := strings.Repeat(tt.want, 3)
		if got := sequence(t, b, pool, len(want)); got != want {
			t.Errorf("weights %v: sequence = %s, want %s", tt.weights, got, want)
		}
	}
}

func TestWeightedShares(t *testing.T) {
	pool := makePool(t, 3, 5, 3, 2)
	want := []float64{0.5, 0.3, 0.2}
	// Smooth WRR is exact over whole cycles.
	checkShares(t, "weighted_round_robin", shares(t, &WeightedRoundRobin{}, pool, 10000), want, 1e-9)
	checkShares(t, "random", shares(t, &Random{}, pool, 10000), want, 0.03)
	checkShares(t, "random, equal weights", shares(t, &Random{}, makePool(t, 4), 10000), []float64{0.25, 0.25, 0.25, 0.25}, 0.03)
}

func TestRandomLearnsHeavierInstance(t *testing.T) {
	b := &Random{}
	pool := makePool(t, 3, 1, 1, 8)
	shares(t, b, pool[:2], 100) // learns a largest weight of 1
	// The weight-8 instance joins: it must get 80%, not a third.
	checkShares(t, "after a heavier instance joined", shares(t, b, pool, 10000), []float64{0.1, 0.1, 0.8}, 0.03)
}

func TestWeightedRoundRobinMembership(t *testing.T) {
	b := &WeightedRoundRobin{}
	all := makePool(t, 4, 5, 1, 1, 3)
	a, bb, c, d := all[0], all[1], all[2], all[3]

	// An unavailable instance is skipped; the others keep their ratio.
	bb.SetFlag(Draining, true)
	got := shares(t, b, []*Instance{a, bb, c}, 600)
	checkShares(t, "b draining", got, []float64{5.0 / 6, 0, 1.0 / 6}, 1e-9)
	bb.SetFlag(Draining, false)

	// A new slice with other members: weights hold from the first cycle on,
	// with no burst to any instance.
	pool := []*Instance{d, a, c}
	if seq := sequence(t, b, pool, 9); strings.Count(seq, "b") != 5 || strings.Contains(seq, "bbb") {
		t.Errorf("after the pool changed: sequence %s, want 5 of 9 to a (b here) and no run of three", seq)
	}
	checkShares(t, "after the pool changed", shares(t, b, pool, 9000), []float64{3.0 / 9, 5.0 / 9, 1.0 / 9}, 1e-3)
}

func TestSlowStartRamp(t *testing.T) {
	const slow = 30 * time.Second
	clk := newTestClock()
	t0 := clk.Now()
	// b has just joined and ramps up; a has full weight.
	steps := []struct {
		at time.Duration
		f  float64 // b's weight factor
	}{
		{0, 0.1},
		{7500 * time.Millisecond, 0.325},
		{15 * time.Second, 0.55},
		{22500 * time.Millisecond, 0.775},
		{30 * time.Second, 1},
		{time.Hour, 1},
	}
	policies := []struct {
		name string
		b    Balancer
		n    int
		tol  float64
	}{
		{"weighted_round_robin", &WeightedRoundRobin{SlowStart: slow, Now: clk.Now}, 2000, 0.001},
		{"random", &Random{SlowStart: slow, Now: clk.Now}, 10000, 0.03},
	}
	for _, p := range policies {
		pool := makePool(t, 2)
		pool[1].SetJoined(t0)
		for _, s := range steps {
			clk.Set(t0.Add(s.at))
			got := shares(t, p.b, pool, p.n)
			checkShares(t, p.name+" at joined+"+s.at.String(), got, []float64{1 / (1 + s.f), s.f / (1 + s.f)}, p.tol)
		}
	}
}

func TestSlowStartDefaultAndDisabled(t *testing.T) {
	clk := newTestClock()
	pool := makePool(t, 2)
	pool[1].SetJoined(clk.Now().Add(-15 * time.Second))
	tests := []struct {
		slow time.Duration
		want float64 // b's factor
	}{
		{0, 0.55},             // default 30s: half way
		{-1, 1},               // disabled
		{10 * time.Second, 1}, // over
		{60 * time.Second, 0.325},
	}
	for _, tt := range tests {
		b := &WeightedRoundRobin{SlowStart: tt.slow, Now: clk.Now}
		got := shares(t, b, pool, 4000)
		checkShares(t, "SlowStart "+tt.slow.String(), got, []float64{1 / (1 + tt.want), tt.want / (1 + tt.want)}, 0.001)
	}
}
