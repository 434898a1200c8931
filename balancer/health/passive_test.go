package health

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
)

type ejection struct {
	in *balancer.Instance
	d  time.Duration
}

// ejections records OnEject calls.
type ejectLog struct {
	mu  sync.Mutex
	got []ejection
}

func (l *ejectLog) record(in *balancer.Instance, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, ejection{in, d})
}

func (l *ejectLog) last() (ejection, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.got) == 0 {
		return ejection{}, 0
	}
	return l.got[len(l.got)-1], len(l.got)
}

func fail(o *Outlier, in *balancer.Instance, p []*balancer.Instance, n int) {
	for range n {
		o.Observe(in, p, true)
	}
}

func ejected(in *balancer.Instance) bool { return in.Flags()&balancer.Ejected != 0 }

func TestOutlierConsecutiveFailures(t *testing.T) {
	p := pool(4)
	var log ejectLog
	o := NewOutlier(PassiveSettings{OnEject: log.record})
	in := p[0]

	fail(o, in, p, 4)
	if ejected(in) {
		t.Fatalf("ejected after 4 failures, want 5 needed")
	}
	o.Observe(in, p, false) // a success resets the count
	fail(o, in, p, 4)
	if ejected(in) {
		t.Fatalf("ejected after 4 failures following a success, want 5 needed")
	}
	fail(o, in, p, 1)
	if !ejected(in) {
		t.Fatalf("Flags() = %v after 5 consecutive failures, want ejected", in.Flags())
	}
	if e, n := log.last(); n != 1 || e.in != in || e.d != 30*time.Second {
		t.Fatalf("OnEject calls = %d, last (%v, %v); want 1, (%v, 30s)", n, e.in, e.d, in)
	}
	// Failures of requests still in flight do not eject again.
	fail(o, in, p, 10)
	if _, n := log.last(); n != 1 {
		t.Fatalf("OnEject calls = %d while ejected, want 1", n)
	}
	for _, other := range p[1:] {
		if !other.Available() {
			t.Errorf("%v.Available() = false, want true", other)
		}
	}
}

func TestOutlierEjectionDuration(t *testing.T) {
	p := pool(3)
	clk := newClock()
	var log ejectLog
	o := NewOutlier(PassiveSettings{Now: clk.Now, OnEject: log.record})
	in := p[0]
	for n := 1; n <= 12; n++ {
		want := min(time.Duration(n)*30*time.Second, 300*time.Second)
		fail(o, in, p, 5)
		if e, _ := log.last(); !ejected(in) || e.d != want {
			t.Fatalf("ejection %d: ejected = %v, duration = %v; want true, %v", n, ejected(in), e.d, want)
		}
		if got := o.Ejections(in); got != n {
			t.Fatalf("Ejections() = %d, want %d", got, n)
		}
		end := clk.Now().Add(want)
		o.Tick(end.Add(-time.Nanosecond), p)
		if !ejected(in) {
			t.Fatalf("ejection %d: un-ejected before %v elapsed", n, want)
		}
		clk.Add(want)
		o.Tick(clk.Now(), p)
		if !in.Available() {
			t.Fatalf("ejection %d: Flags() = %v after %v, want available", n, in.Flags(), want)
		}
		if !in.Joined().Equal(end) {
			t.Fatalf("ejection %d: Joined() = %v, want %v (slow start)", n, in.Joined(), end)
		}
	}
}

func TestOutlierTickResetsFailures(t *testing.T) {
	p := pool(3)
	clk := newClock()
	o := NewOutlier(PassiveSettings{Now: clk.Now})
	in := p[1]
	fail(o, in, p, 5)
	fail(o, in, p, 3) // in flight when ejected
	clk.Add(30 * time.Second)
	o.Tick(clk.Now(), p)
	fail(o, in, p, 4)
	if ejected(in) {
		t.Fatalf("ejected after 4 failures following un-ejection, want a fresh count")
	}
	fail(o, in, p, 1)
	if !ejected(in) {
		t.Fatalf("not ejected after 5 failures following un-ejection")
	}
}

func TestOutlierForgiveness(t *testing.T) {
	p := pool(3)
	clk := newClock()
	var log ejectLog
	o := NewOutlier(PassiveSettings{Now: clk.Now, OnEject: log.record})
	in := p[0]
	fail(o, in, p, 5) // 30s
	clk.Add(30 * time.Second)
	o.Tick(clk.Now(), p)
	fail(o, in, p, 5) // 60s
	clk.Add(60 * time.Second)
	o.Tick(clk.Now(), p)

	steps := []struct {
		advance time.Duration
		want    int
	}{
		{29 * time.Second, 2},
		{time.Second, 1}, // 30s in rotation forgives one ejection
		{29 * time.Second, 1},
		{time.Second, 0},
		{time.Hour, 0},
	}
	for i, s := range steps {
		clk.Add(s.advance)
		o.Tick(clk.Now(), p)
		if got := o.Ejections(in); got != s.want {
			t.Fatalf("step %d: Ejections() = %d, want %d", i, got, s.want)
		}
	}
	fail(o, in, p, 5)
	if e, _ := log.last(); e.d != 30*time.Second {
		t.Errorf("ejection after forgiveness lasts %v, want 30s", e.d)
	}
}

func TestOutlierMaxEjectedPercent(t *testing.T) {
	tests := []struct {
		size, pct, want int
	}{
		{3, 0, 1}, // default 50%: never all three, at most one
		{3, 50, 1},
		{4, 50, 2},
		{2, 50, 1},
		{1, 50, 0}, // a lone instance stays: there is nothing to fail over to
		{3, 100, 3},
		{10, 20, 2},
		{3, 250, 3}, // above 100 is 100
	}
	for _, tt := range tests {
		p := pool(tt.size)
		o := NewOutlier(PassiveSettings{MaxEjectedPercent: tt.pct})
		// Every instance fails, over and over.
		for range 3 {
			for _, in := range p {
				fail(o, in, p, 5)
			}
		}
		got := 0
		for _, in := range p {
			if ejected(in) {
				got++
			}
		}
		if got != tt.want {
			t.Errorf("size %d, MaxEjectedPercent %d: ejected = %d, want %d", tt.size, tt.pct, got, tt.want)
		}
	}
}

func TestOutlierCapFreesUpAfterUnejection(t *testing.T) {
	p := pool(3)
	clk := newClock()
	o := NewOutlier(PassiveSettings{Now: clk.Now})
	fail(o, p[0], p, 5)
	fail(o, p[1], p, 5)
	if ejected(p[1]) {
		t.Fatalf("second of 3 ejected, want capped")
	}
	clk.Add(30 * time.Second)
	o.Tick(clk.Now(), p)
	// p[1] kept failing; its next failure may now eject it.
	fail(o, p[1], p, 1)
	if !ejected(p[1]) {
		t.Fatalf("p[1] not ejected once the cap allows it")
	}
}

func TestOutlierForgetsRemovedInstances(t *testing.T) {
	p := pool(4)
	clk := newClock()
	o := NewOutlier(PassiveSettings{Now: clk.Now})
	gone := p[3]
	fail(o, gone, p, 5)
	if !ejected(gone) {
		t.Fatal("not ejected")
	}
	o.Tick(clk.Now(), p[:3])
	if got := o.Ejections(gone); got != 0 {
		t.Fatalf("Ejections() of a removed instance = %d, want 0 (state dropped)", got)
	}
	// It comes back, still carrying the flag: the next Tick clears it.
	clk.Add(time.Second)
	o.Tick(clk.Now(), p)
	if !gone.Available() || !gone.Joined().Equal(clk.Now()) {
		t.Fatalf("re-added instance: Flags() = %v, Joined() = %v; want available since %v", gone.Flags(), gone.Joined(), clk.Now())
	}
}

func TestOutlierConcurrent(t *testing.T) {
	p := pool(3)
	o := NewOutlier(PassiveSettings{BaseEjection: time.Millisecond})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 2000 {
				in := p[r.IntN(len(p))]
				o.Observe(in, p, r.IntN(4) != 0)
				// Flags change only under o.mu: count a consistent view.
				o.mu.Lock()
				n := 0
				for _, x := range p {
					if ejected(x) {
						n++
					}
				}
				o.mu.Unlock()
				if n > 1 {
					t.Errorf("%d of 3 ejected, want at most 1", n)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			o.Tick(time.Now(), p)
			time.Sleep(50 * time.Microsecond)
		}
	})
	wg.Wait()
}

func TestOutlierRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := pool(3)
		o := NewOutlier(PassiveSettings{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx, func() []*balancer.Instance { return p }) }()

		start := time.Now()
		fail(o, p[2], p, 5)
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if !ejected(p[2]) {
			t.Fatalf("un-ejected after 29s, want 30s")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !p[2].Available() || !p[2].Joined().Equal(start.Add(30*time.Second)) {
			t.Fatalf("after 30s: Flags() = %v, Joined() = %v; want available, joined at +30s", p[2].Flags(), p[2].Joined())
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want context.Canceled", err)
		}
	})
}

func TestObserveSuccessAllocs(t *testing.T) {
	p := pool(3)
	o := NewOutlier(PassiveSettings{})
	o.Observe(p[0], p, true) // state exists
	for _, in := range p[:2] {
		if a := testing.AllocsPerRun(1000, func() { o.Observe(in, p, false) }); a != 0 {
			t.Errorf("Observe(%v, success) allocs = %v, want 0", in, a)
		}
	}
}

func BenchmarkObserveSuccess(b *testing.B) {
	p := pool(3)
	o := NewOutlier(PassiveSettings{})
	o.Observe(p[0], p, true) // the instance has passive state, as after any failure
	b.ReportAllocs()
	for b.Loop() {
		o.Observe(p[0], p, false)
	}
}

func BenchmarkObserveSuccessNoState(b *testing.B) {
	p := pool(3)
	o := NewOutlier(PassiveSettings{})
	b.ReportAllocs()
	for b.Loop() {
		o.Observe(p[0], p, false)
	}
}

func BenchmarkObserveSuccessParallel(b *testing.B) {
	p := pool(3)
	o := NewOutlier(PassiveSettings{})
	for _, in := range p {
		o.Observe(in, p, true)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			o.Observe(p[i%3], p, false)
			i++
		}
	})
}

func BenchmarkObserveFailure(b *testing.B) {
	p := pool(3)
	o := NewOutlier(PassiveSettings{ConsecutiveFailures: 1 << 30})
	b.ReportAllocs()
	for b.Loop() {
		o.Observe(p[0], p, true)
	}
}
