package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("Write() error = %v", err)
	}
	return m.GetCounter().GetValue()
}

// TestCacheOverflow steps through the cache's states: own series up to the
// limit, then folded keys remembered as aliases up to the limit, then folded
// keys that are no longer remembered.
func TestCacheOverflow(t *testing.T) {
	overflow := prometheus.NewCounter(prometheus.CounterOpts{Name: "overflow_total", Help: "h"})
	created := map[string]int{}
	c := newCache(2, overflow,
		func(k string) *string { created[k]++; return &k },
		func(string) string { return overflowValue })

	steps := []struct {
		key                    string
		want                   string // value the key resolves to
		series, alias          int
		overflowCount, creates int // after the step: overflow counter, create calls
	}{
		{"a", "a", 1, 0, 0, 1},
		{"b", "b", 2, 0, 0, 2},
		{"a", "a", 2, 0, 0, 2},                     // hit
		{"c", overflowValue, 2, 1, 1, 3},           // folds; overflow entry created
		{"c", overflowValue, 2, 1, 1, 3},           // alias hit: no lock, no count
		{"d", overflowValue, 2, 2, 2, 3},           // folds; second and last alias
		{"e", overflowValue, 2, 2, 3, 3},           // alias limit reached: not remembered
		{"e", overflowValue, 2, 2, 4, 3},           // so counted again
		{overflowValue, overflowValue, 2, 2, 4, 3}, // the overflow key itself is cached
	}
	for i, s := range steps {
		if got := *c.get(s.key); got != s.want {
			t.Errorf("step %d: get(%q) = %q, want %q", i, s.key, got, s.want)
		}
		if c.series != s.series || c.alias != s.alias {
			t.Errorf("step %d: series, alias = %d, %d, want %d, %d", i, c.series, c.alias, s.series, s.alias)
		}
		if got := counterValue(t, overflow); got != float64(s.overflowCount) {
			t.Errorf("step %d: overflow = %v, want %d", i, got, s.overflowCount)
		}
		if n := created["a"] + created["b"] + created[overflowValue] + created["c"] + created["d"] + created["e"]; n != s.creates {
			t.Errorf("step %d: create calls = %d, want %d", i, n, s.creates)
		}
	}

	// Forgetting an own series frees room for a new key.
	deleted := 0
	c.forget(func(k string) bool { return k == "a" }, func() { deleted++ })
	if deleted != 1 || c.series != 1 || c.alias != 2 {
		t.Fatalf("after forget(a): deleteSeries calls %d, series %d, alias %d, want 1, 1, 2", deleted, c.series, c.alias)
	}
	if got := *c.get("f"); got != "f" {
		t.Errorf("get(f) after forget = %q, want its own series", got)
	}

	// Forgetting the overflow entry drops every alias pointing at it.
	c.forget(func(k string) bool { return k == overflowValue }, func() {})
	if c.alias != 0 {
		t.Errorf("aliases after forgetting the overflow entry = %d, want 0", c.alias)
	}
	before := created[overflowValue]
	if got := *c.get("c"); got != overflowValue || created[overflowValue] != before+1 {
		t.Errorf("get(c) = %q with %d new overflow children, want a fresh overflow child", got, created[overflowValue]-before)
	}
}

func TestCodeAndMethod(t *testing.T) {
	codes := []struct {
		status int
		want   string
	}{
		{-1, "error"}, {0, "error"}, {1, "other"}, {99, "other"}, {100, "1xx"}, {199, "1xx"},
		{200, "2xx"}, {304, "3xx"}, {404, "4xx"}, {499, "4xx"}, {500, "5xx"}, {599, "5xx"}, {600, "other"}, {999, "other"},
	}
	for _, c := range codes {
		if got := codeNames[codeIndex(c.status)]; got != c.want {
			t.Errorf("code(%d) = %q, want %q", c.status, got, c.want)
		}
	}
	methods := []struct{ in, want string }{
		{"GET", "GET"}, {"HEAD", "HEAD"}, {"POST", "POST"}, {"PUT", "PUT"}, {"PATCH", "PATCH"},
		{"DELETE", "DELETE"}, {"OPTIONS", "OPTIONS"}, {"CONNECT", "other"}, {"TRACE", "other"},
		{"get", "other"}, {"", "other"}, {"PROPFIND", "other"},
	}
	for _, m := range methods {
		if got := methodNames[methodIndex(m.in)]; got != m.want {
			t.Errorf("method(%q) = %q, want %q", m.in, got, m.want)
		}
	}
}
