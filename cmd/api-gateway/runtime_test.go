package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestParseCgroupLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"max\n":                 0,
		"268435456\n":           268435456,
		"9223372036854771712\n": 0, // cgroup v1 unlimited
		"":                      0,
		"garbage":               0,
		"-1":                    0,
	} {
		if got := parseCgroupLimit(in); got != want {
			t.Errorf("parseCgroupLimit(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestGCTunerPercent(t *testing.T) {
	tu := newGCTuner(64<<20, 100, 400)
	for live, want := range map[uint64]int{
		0:         400,
		4 << 20:   400, // small heap: collect rarely
		16 << 20:  400,
		32 << 20:  200,
		64 << 20:  100,
		512 << 20: 100, // never below Go's default
	} {
		if got := tu.percent(live); got != want {
			t.Errorf("percent(%d MiB) = %d, want %d", live>>20, got, want)
		}
	}
}

// TestGCTunerFollowsLiveHeap runs the tuner on this process's collector:
// GOGC is raised while the live heap is small and lowered once a large
// object is held live, cycle by cycle.
func TestGCTunerFollowsLiveHeap(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	tu := newGCTuner(32<<20, 100, 400)
	tu.start()
	defer tu.stop()
	gogc := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	waitFor := func(want uint64) {
		t.Helper()
		for i := 0; i < 50; i++ {
			n := tu.cycles.Load()
			runtime.GC()
			// The finalizer runs after the cycle; wait for it.
			for j := 0; j < 100 && tu.cycles.Load() == n; j++ {
				time.Sleep(time.Millisecond)
			}
			metrics.Read(gogc)
			if gogc[0].Value.Uint64() == want {
				return
			}
		}
		t.Fatalf("GOGC = %d, want %d", gogc[0].Value.Uint64(), want)
	}
	waitFor(400)
	big := make([]byte, 96<<20)
	waitFor(100)
	runtime.KeepAlive(big)
	big = nil
	waitFor(400)
}
