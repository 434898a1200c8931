package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// inProcess builds the gateway package's test binary once and runs its
// handler benchmarks (BenchmarkProxy by default) rounds times, each round
// a fresh process running every target once. Machine noise moves whole
// rounds, so each target's ratio is taken within its round and the
// median over rounds is reported, with the range.
func inProcess(rounds int, bench, benchtime string, out io.Writer) error {
	dir, err := os.MkdirTemp("", "gwbench-inprocess-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "gateway.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "github.com/pyairtable/api-gateway/gateway")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the benchmark binary: %w", err)
	}
	var all []benchRound
	for i := 0; i < rounds; i++ {
		cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", bench, "-test.benchtime", benchtime, "-test.benchmem")
		cmd.Stderr = os.Stderr
		raw, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		r, err := parseRound(string(raw))
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", i+1, rounds)
		all = append(all, r)
	}
	return report(all, out)
}

// benchRound is one process's results, in the order the targets ran.
type benchRound struct {
	names  []string
	ns     map[string]float64
	allocs map[string]int
}

var benchLine = regexp.MustCompile(`^Benchmark\w+/(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:.*?\s(\d+) allocs/op)?`)

// parseRound reads go test -bench output.
func parseRound(s string) (benchRound, error) {
	r := benchRound{ns: map[string]float64{}, allocs: map[string]int{}}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return r, err
		}
		r.names = append(r.names, m[1])
		r.ns[m[1]] = ns
		if m[3] != "" {
			r.allocs[m[1]], _ = strconv.Atoi(m[3])
		}
	}
	if len(r.names) < 2 {
		return r, fmt.Errorf("expected at least two benchmark targets, found %d", len(r.names))
	}
	return r, nil
}

// report prints, per target, the median ns/op and the median, lowest and
// highest ratio of the first target's ns/op to its own (the first target
// is the bare proxy: a ratio of 0.9 means 0.9x its throughput).
func report(rounds []benchRound, out io.Writer) error {
	if len(rounds) == 0 {
		return fmt.Errorf("no rounds")
	}
	base := rounds[0].names[0]
	fmt.Fprintf(out, "%-22s %10s %7s %8s %s\n", "target", "ns/op", "allocs", "ratio", "(min-max over rounds)")
	for _, name := range rounds[0].names {
		var ns, ratios []float64
		for _, r := range rounds {
			v, ok := r.ns[name]
			b, okb := r.ns[base]
			if !ok || !okb || v <= 0 {
				continue
			}
			ns = append(ns, v)
			ratios = append(ratios, b/v)
		}
		if len(ns) == 0 {
			continue
		}
		fmt.Fprintf(out, "%-22s %10.0f %7d %8.3f (%.2f-%.2f, %d rounds)\n", name, median(ns), rounds[0].allocs[name],
			median(ratios), slices.Min(ratios), slices.Max(ratios), len(ratios))
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
