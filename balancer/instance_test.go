package balancer

import (
	"math"
	"testing"
	"time"
)

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func TestInstanceLatencyPeakEWMA(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	alpha := func(dt time.Duration) float64 { return max(1-math.Exp(-dt.Seconds()/10), minAlpha) }
	// Each step ends one request dt after the previous one.
	steps := []struct {
		name   string
		dt     time.Duration
		rtt    time.Duration
		failed bool
		want   time.Duration
	}{
		{"first observation is taken as is", 0, ms(10), false, ms(10)},
		{"slower response: peak, at once", time.Millisecond, ms(40), false, ms(40)},
		{"faster response, dense traffic: minAlpha of the gap", time.Millisecond, ms(20), false, ms(40 - 0.05*20)},
		{"same instant: minAlpha", 0, ms(20), false, ms(39 - 0.05*19)},
		{"faster response after 5s: 1-e^-0.5 of the gap", 5 * time.Second, ms(10), false, ms(38.05 - alpha(5*time.Second)*28.05)},
		{"failed fast response does not lower it", time.Millisecond, ms(1), true, ms(38.05 - alpha(5*time.Second)*28.05)},
		{"failed slow response still raises it", time.Millisecond, ms(100), true, ms(100)},
		{"negative rtt counts as zero", time.Second, -time.Second, false, ms(100 - alpha(time.Second)*100)},
	}
	clk := newTestClock()
	in := MustInstance("http://10.0.0.1:80", 1)
	for _, s := range steps {
		clk.Advance(s.dt)
		in.Begin()
		in.End(s.rtt, s.failed, clk.Now())
		if got := in.Latency(); !near(float64(got), float64(s.want), 1e3) {
			t.Fatalf("%s: Latency() = %v, want %v", s.name, got, s.want)
		}
	}
	if in.InFlight() != 0 || in.Requests() != uint64(len(steps)) || in.Failures() != 2 {
		t.Errorf("InFlight, Requests, Failures = %d, %d, %d; want 0, %d, 2", in.InFlight(), in.Requests(), in.Failures(), len(steps))
	}
}

func TestInstanceAgeing(t *testing.T) {
	clk := newTestClock()
	in := MustInstance("http://10.0.0.1:80", 1)
	if got := in.LatencyAt(clk.Now()); got != 0 {
		t.Fatalf("LatencyAt() before any observation = %v, want 0", got)
	}
	in.Begin()
	in.End(10*time.Millisecond, true, clk.Now())
	wantErr := minAlpha
	tests := []struct {
		after    time.Duration
		inflight bool
		lat      time.Duration
		err      float64
	}{
		{0, false, 10 * time.Millisecond, wantErr},
		{10 * time.Second, false, 3_678_794 * time.Nanosecond, wantErr / math.E},
		{20 * time.Second, false, 1_353_353 * time.Nanosecond, wantErr / math.E / math.E},
		// A request in flight stops the ageing: a hung instance must not
		// look fast or healthy.
		{20 * time.Second, true, 10 * time.Millisecond, wantErr},
		{-time.Second, false, 10 * time.Millisecond, wantErr}, // clock behind the observation
	}
	for _, tt := range tests {
		if tt.inflight {
			in.Begin()
		}
		now := clk.Now().Add(tt.after)
		if got := in.LatencyAt(now); !near(float64(got), float64(tt.lat), 1e3) {
			t.Errorf("after %v (in flight %v): LatencyAt() = %v, want %v", tt.after, tt.inflight, got, tt.lat)
		}
		if got := in.ErrorRateAt(now); !near(got, tt.err, 1e-9) {
			t.Errorf("after %v (in flight %v): ErrorRateAt() = %v, want %v", tt.after, tt.inflight, got, tt.err)
		}
		if tt.inflight {
			in.inflight.Add(-1)
		}
	}
	if got := in.Latency(); got != 10*time.Millisecond {
		t.Errorf("Latency() = %v, want the unaged 10ms", got)
	}
}

func TestInstanceErrorRate(t *testing.T) {
	clk := newTestClock()
	in := MustInstance("http://10.0.0.1:80", 1)
	end := func(failed bool) {
		clk.Advance(time.Millisecond)
		in.Begin()
		in.End(time.Millisecond, failed, clk.Now())
	}
	// 20 failures in a row: 1 - 0.95^20, give or take the ageing of 1ms gaps.
	for range 20 {
		end(true)
	}
	if got, want := in.ErrorRate(), 1-math.Pow(1-minAlpha, 20); !near(got, want, 1e-3) {
		t.Errorf("ErrorRate() after 20 failures = %v, want %v", got, want)
	}
	// Steady 50% failures settle near 0.5.
	for i := range 400 {
		end(i%2 == 0)
	}
	if got := in.ErrorRate(); !near(got, 0.5, 0.05) {
		t.Errorf("ErrorRate() at 50%% failures = %v, want 0.5±0.05", got)
	}
	// One success after a minute of silence: the old rate aged away.
	clk.Advance(time.Minute)
	end(false)
	if got := in.ErrorRate(); got > 0.01 {
		t.Errorf("ErrorRate() after a quiet minute = %v, want < 0.01", got)
	}
}

func TestInstanceWeightAtSlowStart(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	in := MustInstance("http://10.0.0.1:80", 4)
	in.SetJoined(t0)
	steps := []struct {
		at   time.Duration
		slow time.Duration
		want float64
	}{
		{-time.Second, 30 * time.Second, 0.4}, // clock before the join: the floor
		{0, 30 * time.Second, 0.4},
		{3 * time.Second, 30 * time.Second, 4 * 0.19},
		{15 * time.Second, 30 * time.Second, 4 * 0.55},
		{27 * time.Second, 30 * time.Second, 4 * 0.91},
		{30 * time.Second, 30 * time.Second, 4},
		{time.Hour, 30 * time.Second, 4},
		{5 * time.Second, 10 * time.Second, 4 * 0.55},
		{0, 0, 4}, // disabled
		{0, -time.Second, 4},
	}
	for _, s := range steps {
		if got := in.WeightAt(t0.Add(s.at), s.slow); !near(got, s.want, 1e-9) {
			t.Errorf("WeightAt(joined+%v, %v) = %v, want %v", s.at, s.slow, got, s.want)
		}
	}
	in.SetJoined(time.Time{})
	if got := in.WeightAt(t0, time.Minute); got != 4 {
		t.Errorf("after SetJoined(zero): WeightAt() = %v, want 4", got)
	}
	if !in.Joined().IsZero() {
		t.Errorf("after SetJoined(zero): Joined() = %v, want zero", in.Joined())
	}
}

func TestNewInstance(t *testing.T) {
	tests := []struct {
		url    string
		weight int
		host   string
		wantW  int
		ok     bool
	}{
		{"http://10.0.0.1:8080/path?q", 3, "10.0.0.1:8080", 3, true},
		{"https://svc.internal", 0, "svc.internal", 1, true},
		{"ftp://10.0.0.1", 1, "", 0, false},
		{"/relative", 1, "", 0, false},
		{"http://%zz", 1, "", 0, false},
	}
	for _, tt := range tests {
		in, err := NewInstance(tt.url, tt.weight)
		if (err == nil) != tt.ok {
			t.Errorf("NewInstance(%q) error = %v, want ok=%v", tt.url, err, tt.ok)
			continue
		}
		if tt.ok && (in.String() != tt.host || in.Weight != tt.wantW) {
			t.Errorf("NewInstance(%q, %d) = %s weight %d; want %s weight %d", tt.url, tt.weight, in, in.Weight, tt.host, tt.wantW)
		}
	}
}

func TestFlags(t *testing.T) {
	in := MustInstance("http://10.0.0.1:80", 1)
	steps := []struct {
		f           Flag
		on, changed bool
		want        string
	}{
		{Unhealthy, true, true, "unhealthy"},
		{Draining, true, false, "unhealthy,draining"},
		{Unhealthy, false, false, "draining"},
		{Draining, false, true, "up"},
		{Draining, false, false, "up"},
	}
	for _, s := range steps {
		if got := in.SetFlag(s.f, s.on); got != s.changed {
			t.Errorf("SetFlag(%v, %v) = %v, want %v", s.f, s.on, got, s.changed)
		}
		if got := in.Flags().String(); got != s.want {
			t.Errorf("Flags() = %s, want %s", got, s.want)
		}
		if in.Available() != (s.want == "up") {
			t.Errorf("Available() = %v with flags %s", in.Available(), s.want)
		}
	}
}
