package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// tuneRuntime sets the garbage collector for a proxy: a gateway's live heap
// is small and its garbage is per-request, so collecting less often buys
// throughput (GOGC=400 measured 6–9% in the prototype) — but only
// safely under a memory limit, which is taken from the container's cgroup
// when GOMEMLIMIT is not set, so that a 256 MiB Kubernetes limit is
// respected under load. Without a limit Go's default (GOGC=100) stays:
// GOGC=200 measured no faster at 5,000 connections and took 40% more RSS
// (452 vs 323 MiB). Explicit GOGC and GOMEMLIMIT settings always win.
func tuneRuntime(logger *slog.Logger) {
	limited := os.Getenv("GOMEMLIMIT") != ""
	if !limited {
		if max := cgroupMemoryLimit(); max > 0 {
			// Leave headroom for stacks, buffers outside the heap and
			// the kernel's accounting.
			debug.SetMemoryLimit(max / 10 * 9)
			limited = true
			logger.Info("memory limit from cgroup", "cgroup_bytes", max, "gomemlimit_bytes", max/10*9)
		}
	}
	if limited && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
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
