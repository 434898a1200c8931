package balancer

import (
	"testing"
	"time"
)

// loadSim drives a balancer with synthetic traffic on an injected clock:
// every tick it ends the requests whose service time is over, then picks,
// begins and schedules perTick new ones. Requests overlap, so in-flight
// counts are realistic, and the run is fast and exact.
type loadSim struct {
	clk     *testClock
	pending []simRequest
	// service returns how long a request to in takes and whether it fails.
	service func(in *Instance) (time.Duration, bool)
}

type simRequest struct {
	in          *Instance
	start, done time.Time
	failed      bool
}

func newLoadSim(clk *testClock, service func(in *Instance) (time.Duration, bool)) *loadSim {
	return &loadSim{clk: clk, service: service}
}

// run simulates ticks ticks and returns each pool position's share of picks.
func (s *loadSim) run(t *testing.T, b Balancer, pool []*Instance, ticks, perTick int, tick time.Duration) []float64 {
	t.Helper()
	counts := make([]float64, len(pool))
	total := 0.0
	for range ticks {
		s.clk.Advance(tick)
		now := s.clk.Now()
		kept := s.pending[:0]
		for _, r := range s.pending {
			if r.done.After(now) {
				kept = append(kept, r)
				continue
			}
			r.in.End(now.Sub(r.start), r.failed, now)
		}
		s.pending = kept
		for range perTick {
			in, err := b.Pick(nil, pool)
			if err != nil {
				t.Fatalf("Pick() error = %v", err)
			}
			in.Begin()
			d, failed := s.service(in)
			s.pending = append(s.pending, simRequest{in: in, start: now, done: now.Add(d), failed: failed})
			counts[indexOf(pool, in)]++
			total++
		}
	}
	for i := range counts {
		counts[i] /= total
	}
	return counts
}

func TestLatencyPrefersFastAndRecovers(t *testing.T) {
	clk := newTestClock()
	pool := makePool(t, 2)
	slow := pool[1]
	slowRTT := 50 * time.Millisecond // 10x fast
	sim := newLoadSim(clk, func(in *Instance) (time.Duration, bool) {
		if in == slow {
			return slowRTT, false
		}
		return 5 * time.Millisecond, false
	})
	b := &Latency{Now: clk.Now}

	got := sim.run(t, b, pool, 10000, 1, time.Millisecond) // 10s at 1000 req/s
	t.Logf("fast share %.3f", got[0])
	if got[0] < 0.8 {
		t.Errorf("slow instance 10x slower: fast share = %.3f, want >= 0.8", got[0])
	}

	slowRTT = 5 * time.Millisecond
	sim.run(t, b, pool, 30000, 1, time.Millisecond) // 30s to notice
	got = sim.run(t, b, pool, 10000, 1, time.Millisecond)
	t.Logf("recovered share %.3f", got[1])
	if got[1] < 0.35 {
		t.Errorf("after the slow instance recovered: its share = %.3f, want >= 0.35", got[1])
	}
}

func TestLatencyExploresNewInstance(t *testing.T) {
	clk := newTestClock()
	b := &Latency{Now: clk.Now}
	pool := makePool(t, 2)
	for _, in := range pool {
		in.Begin()
		in.End(10*time.Millisecond, false, clk.Now())
	}
	newcomer := MustInstance("http://10.0.0.9:80", 1)
	pool = append(pool, newcomer)
	// P2C meets the newcomer in 2 of 3 pairs; it must win every one of them
	// until it has been observed (and not merely half, on a coin toss).
	n := 0
	for range 600 {
		in, err := b.Pick(nil, pool)
		if err != nil {
			t.Fatal(err)
		}
		if in == newcomer {
			n++
		}
	}
	if share := float64(n) / 600; share < 0.6 || share > 0.73 {
		t.Fatalf("unobserved instance's share = %.3f, want 2/3", share)
	}
	// Once it is seen to be slow, it is avoided.
	newcomer.Begin()
	newcomer.End(200*time.Millisecond, false, clk.Now())
	for range 100 {
		if in, _ := b.Pick(nil, pool); in == newcomer {
			t.Fatalf("Pick() = slow newcomer (200ms) over instances at 10ms")
		}
	}
}

func TestHealthScoreAvoidsErrorsAndHonoursWeights(t *testing.T) {
	tests := []struct {
		name    string
		penalty float64
		// bounds on the failing instance's share; its weighted share is 0.25
		lo, hi float64
	}{
		{"default penalty", 0, 0, 0.25 / 4},
		{"errors ignored", -1, 0.22, 0.28}, // control: the test can tell
	}
	for _, tt := range tests {
		clk := newTestClock()
		pool := makePool(t, 4, 3, 2, 1, 2)
		failing := pool[3]
		n := 0
		sim := newLoadSim(clk, func(in *Instance) (time.Duration, bool) {
			n++
			return 20 * time.Millisecond, in == failing && n%2 == 0 // 50% failures
		})
		b := &HealthScore{Now: clk.Now, ErrorPenalty: tt.penalty}
		sim.run(t, b, pool, 2000, 5, time.Millisecond) // warm up: 100 in flight
		got := sim.run(t, b, pool, 10000, 5, time.Millisecond)
		if got[3] < tt.lo || got[3] > tt.hi {
			t.Errorf("%s: share of the instance failing 50%% = %.3f, want in [%.3f, %.3f] (all: %.3f)", tt.name, got[3], tt.lo, tt.hi, got)
		}
		healthy := got[0] + got[1] + got[2]
		norm := []float64{got[0] / healthy, got[1] / healthy, got[2] / healthy}
		checkShares(t, tt.name+": healthy instances weighted 3:2:1", norm, []float64{3.0 / 6, 2.0 / 6, 1.0 / 6}, 0.03)
	}
}

func TestHealthScoreSkewedWeights(t *testing.T) {
	// 10:1:1 asks 83% of one instance, more than the 2/3 that two uniform
	// choices could give it.
	clk := newTestClock()
	pool := makePool(t, 3, 10, 1, 1)
	sim := newLoadSim(clk, func(*Instance) (time.Duration, bool) { return 20 * time.Millisecond, false })
	b := &HealthScore{Now: clk.Now}
	sim.run(t, b, pool, 1000, 10, time.Millisecond)
	got := sim.run(t, b, pool, 5000, 10, time.Millisecond)
	checkShares(t, "weights 10:1:1 under load", got, []float64{10.0 / 12, 1.0 / 12, 1.0 / 12}, 0.03)
}

func TestHealthScoreSlowStart(t *testing.T) {
	clk := newTestClock()
	pool := makePool(t, 2)
	sim := newLoadSim(clk, func(*Instance) (time.Duration, bool) { return 20 * time.Millisecond, false })
	b := &HealthScore{Now: clk.Now, SlowStart: 30 * time.Second}
	sim.run(t, b, pool, 1000, 5, time.Millisecond)
	pool[1].SetJoined(clk.Now())
	// Share of the joining instance in 3s windows starting 0, 13.5 and 40s
	// after it joined (factors about 0.19, 0.6 and 1).
	want := []struct{ lo, hi float64 }{{0, 0.2}, {0.3, 0.42}, {0.46, 0.54}}
	var got []float64
	for i, w := range want {
		if i == 1 {
			sim.run(t, b, pool, 10500, 5, time.Millisecond)
		}
		if i == 2 {
			sim.run(t, b, pool, 23500, 5, time.Millisecond)
		}
		s := sim.run(t, b, pool, 3000, 5, time.Millisecond)[1]
		got = append(got, s)
		if s < w.lo || s > w.hi {
			t.Errorf("window %d: joining instance's share = %.3f, want in [%.2f, %.2f] (so far %.3f)", i, s, w.lo, w.hi, got)
		}
	}
}
