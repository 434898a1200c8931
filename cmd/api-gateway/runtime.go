package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// GC policy. A gateway's live heap is small and nearly all its garbage is
// per-request, so at Go's default (GOGC=100) it collects every few
// megabytes of traffic: measured here, GOGC=400 serves 8% more requests
// per CPU-second at 64 connections. A fixed high GOGC would multiply the
// heap of a gateway holding many thousands of connections (GOGC=200 took
// 40% more RSS at 5,000), so the percentage follows the live heap instead:
// the heap may grow by gcHeadroom beyond what is live, at most
// gcMaxPercent and at least Go's default. Small heaps collect rarely, big
// ones as usual, and the extra memory is bounded by gcHeadroom.
const (
	gcHeadroom   = 32 << 20
	gcMaxPercent = 400
	gcMinPercent = 100
)

// tuneRuntime sets the garbage collector for a proxy. When GOMEMLIMIT is
// unset the limit is taken from the container's cgroup (90% of it), so a
// 256 MiB Kubernetes limit is respected under load; when GOGC is unset the
// collector follows the live heap (see gcHeadroom). Explicit GOGC and
// GOMEMLIMIT settings always win.
func tuneRuntime(logger *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") == "" {
		if max := cgroupMemoryLimit(); max > 0 {
			// Leave headroom for stacks, buffers outside the heap and
			// the kernel's accounting.
			debug.SetMemoryLimit(max / 10 * 9)
			logger.Info("memory limit from cgroup", "cgroup_bytes", max, "gomemlimit_bytes", max/10*9)
		}
	}
	if os.Getenv("GOGC") == "" {
		gcTunerOnce.Do(func() { newGCTuner(gcHeadroom, gcMinPercent, gcMaxPercent).start() })
	}
}

var gcTunerOnce sync.Once

// gcTuner sets GOGC after every collection from the live heap it left.
// It runs on the finalizer goroutine, once per GC cycle: no goroutine of
// its own and nothing on the request path.
type gcTuner struct {
	headroom       uint64
	minPct, maxPct int
	sample         []metrics.Sample
	last           int
	stopped        atomic.Bool
	cycles         atomic.Int64 // adjustments made, for tests
}

func newGCTuner(headroom uint64, minPct, maxPct int) *gcTuner {
	return &gcTuner{
		headroom: headroom, minPct: minPct, maxPct: maxPct,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
	}
}

// percent is the GOGC that lets a heap with live bytes grow by the
// headroom, within [minPct, maxPct].
func (t *gcTuner) percent(live uint64) int {
	if live == 0 {
		return t.maxPct
	}
	p := t.headroom * 100 / live
	switch {
	case p >= uint64(t.maxPct):
		return t.maxPct
	case p <= uint64(t.minPct):
		return t.minPct
	}
	return int(p)
}

func (t *gcTuner) start() {
	t.adjust()
	t.arm()
}

// stop ends the tuning after the next collection; GOGC keeps its last
// value.
func (t *gcTuner) stop() { t.stopped.Store(true) }

// gcSentinel is garbage as soon as it is made; its finalizer runs once
// the next collection has found it so, and arms the next sentinel.
type gcSentinel struct{ t *gcTuner }

func (t *gcTuner) arm() {
	runtime.SetFinalizer(&gcSentinel{t: t}, func(s *gcSentinel) {
		if s.t.stopped.Load() {
			return
		}
		s.t.adjust()
		s.t.arm()
	})
}

func (t *gcTuner) adjust() {
	metrics.Read(t.sample)
	var live uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	// Change the setting only when it moves by more than a tenth, so a
	// steady heap does not reset the pacer every cycle.
	if p := t.percent(live); t.last == 0 || p > t.last+t.last/10 || p < t.last-t.last/10 {
		debug.SetGCPercent(p)
		t.last = p
	}
	t.cycles.Add(1)
}

// cgroupMemoryLimit returns the memory limit of the process's cgroup in
// bytes, or 0 when there is none (or it cannot be read).
func cgroupMemoryLimit() int64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		return parseCgroupLimit(string(b))
	}
	return 0
}

func parseCgroupLimit(s string) int64 {
	s = strings.TrimSpace(s)
	if s == "" || s == "max" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0 // cgroup v1 reports "unlimited" as a huge number
	}
	return n
}
