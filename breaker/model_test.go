package breaker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// model is a deliberately naive reference implementation of the documented
// state machine: it keeps every outcome of the closed period in a list and
// recounts the window from scratch, and it keeps the current open timeout
// and doubles it, instead of computing anything incrementally.
type model struct {
	// Effective settings, written out by hand in the tables below rather
	// than derived with the code under test.
	consec   int     // 0: disabled
	ratio    float64 // < 0: disabled
	minReq   int
	width    time.Duration
	openFor0 time.Duration
	maxOpen  time.Duration
	probes   int
	soft     bool // errSoft counts as a success

	origin   time.Time
	state    State
	gen      uint64
	until    time.Time
	openFor  time.Duration
	streak   int
	outcomes []modelOutcome
	run      int // consecutive failures
	used     int
	succ     int
	trips    int
	rejected int
	log      []string
}

type modelOutcome struct {
	at     time.Time
	failed bool
}

// outcome kinds a call can report
const (
	kindOK = iota
	kindFail
	kindCancel
	kindSoft
	numKinds
)

var kindErr = [numKinds]error{nil, errBoom, fmt.Errorf("client went away: %w", context.Canceled), errSoft}

func (m *model) bucket(t time.Time) int64 { return int64(t.Sub(m.origin) / m.width) }

func (m *model) window(now time.Time) (reqs, fails int) {
	for _, o := range m.outcomes {
		if m.bucket(o.at) > m.bucket(now)-10 {
			reqs++
			if o.failed {
				fails++
			}
		}
	}
	return reqs, fails
}

func (m *model) to(s State) {
	m.log = append(m.log, m.state.String()+"->"+s.String())
	m.state = s
	m.gen++
	m.used, m.succ = 0, 0
}

func (m *model) refresh(now time.Time) {
	if m.state == Open && !now.Before(m.until) {
		m.to(HalfOpen)
	}
}

func (m *model) open(now time.Time) {
	m.streak++
	if m.streak == 1 {
		m.openFor = m.openFor0
	} else {
		m.openFor = min(2*m.openFor, m.maxOpen)
	}
	m.until = now.Add(m.openFor)
	m.trips++
	m.to(Open)
}

func (m *model) allow(now time.Time) (uint64, error) {
	m.refresh(now)
	switch m.state {
	case Open:
		m.rejected++
		return 0, ErrOpen
	case HalfOpen:
		if m.used == m.probes {
			m.rejected++
			return 0, ErrTooManyProbes
		}
		m.used++
	}
	return m.gen, nil
}

func (m *model) done(gen uint64, kind int, now time.Time) {
	if gen != m.gen {
		return
	}
	failed := kind == kindFail || (kind == kindSoft && !m.soft)
	switch m.state {
	case Closed:
		if kind == kindCancel {
			return
		}
		m.outcomes = append(m.outcomes, modelOutcome{now, failed})
		if !failed {
			m.run = 0
			return
		}
		m.run++
		reqs, fails := m.window(now)
		if (m.consec > 0 && m.run >= m.consec) ||
			(m.ratio >= 0 && reqs >= m.minReq && float64(fails)/float64(reqs) >= m.ratio) {
			m.open(now)
		}
	case HalfOpen:
		switch {
		case kind == kindCancel:
			m.used--
		case failed:
			m.open(now)
		default:
			m.succ++
			if m.succ == m.probes {
				m.outcomes, m.run, m.streak = nil, 0, 0
				m.to(Closed)
			}
		}
	}
}

func (m *model) ready(now time.Time) bool {
	m.refresh(now)
	return m.state == Closed || (m.state == HalfOpen && m.used < m.probes)
}

func (m *model) retryAfter(now time.Time) time.Duration {
	if m.state != Open || !now.Before(m.until) {
		return 0
	}
	return m.until.Sub(now)
}

func (m *model) counts(now time.Time) Counts {
	m.refresh(now)
	reqs, fails := m.window(now)
	return Counts{
		Requests: int64(reqs), Failures: int64(fails), ConsecutiveFailures: int64(m.run),
		Probes: int64(m.used), ProbeSuccesses: int64(m.succ),
		Trips: uint64(m.trips), ConsecutiveTrips: m.streak, Rejected: uint64(m.rejected),
		Generation: m.gen,
	}
}

// Settings choices, each with the values the documentation promises.
var (
	consecChoices = []struct{ set, eff int }{{0, 5}, {-1, 0}, {1, 1}, {2, 2}, {3, 3}}
	ratioChoices  = []struct{ set, eff float64 }{{0, 0.5}, {-1, -1}, {0.25, 0.25}, {0.34, 0.34}, {1, 1}}
	minReqChoices = []struct{ set, eff int }{{0, 20}, {-3, 1}, {1, 1}, {3, 3}, {5, 5}}
	windowChoices = []struct{ set, width time.Duration }{
		{0, time.Second}, {-time.Second, time.Second}, {400 * time.Millisecond, 40 * time.Millisecond},
		{1500 * time.Millisecond, 150 * time.Millisecond}, {7, 1},
	}
	openChoices = []struct{ set, eff time.Duration }{
		{0, 10 * time.Second}, {100 * time.Millisecond, 100 * time.Millisecond}, {time.Second, time.Second},
		{250 * time.Millisecond, 250 * time.Millisecond},
	}
	// The effective maximum is at least the effective open timeout.
	maxOpenChoices = []struct{ set, eff time.Duration }{
		{0, 60 * time.Second}, {-1, 60 * time.Second}, {300 * time.Millisecond, 300 * time.Millisecond},
		{time.Second, time.Second},
	}
	probeChoices = []struct{ set, eff int }{{0, 3}, {-1, 1}, {1, 1}, {2, 2}, {4, 4}}
)

// byteReader hands out fuzz input, then zeros.
type byteReader struct{ b []byte }

func (r *byteReader) next() int {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return int(v)
}

// checkAgainstModel decodes a configuration and a sequence of operations
// from data, runs them on a Circuit and on the model, and fails at the
// first difference.
func checkAgainstModel(t *testing.T, data []byte) {
	t.Helper()
	// Long inputs add nothing the fuzzer cannot reach with short ones, and
	// the naive model is quadratic.
	if len(data) > 2048 {
		data = data[:2048]
	}
	in := &byteReader{data}
	pick := func(n int) int { return in.next() % n }

	cc := consecChoices[pick(len(consecChoices))]
	rc := ratioChoices[pick(len(ratioChoices))]
	mc := minReqChoices[pick(len(minReqChoices))]
	wc := windowChoices[pick(len(windowChoices))]
	oc := openChoices[pick(len(openChoices))]
	xc := maxOpenChoices[pick(len(maxOpenChoices))]
	pc := probeChoices[pick(len(probeChoices))]
	soft := pick(2) == 1

	clk := &fakeClock{t: t0}
	var got []string
	s := Settings{
		Name: "model", ConsecutiveFailures: cc.set, FailureRatio: rc.set, MinRequests: mc.set,
		Window: wc.set, OpenTimeout: oc.set, MaxOpenTimeout: xc.set, HalfOpenRequests: pc.set,
		Now: clk.Now,
		OnStateChange: func(_ string, from, to State) {
			got = append(got, from.String()+"->"+to.String())
		},
	}
	if soft {
		s.IsFailure = func(err error) bool { return !errors.Is(err, errSoft) }
	}
	c := New(s)
	m := &model{
		consec: cc.eff, ratio: rc.eff, minReq: mc.eff, width: wc.width, openFor0: oc.eff,
		maxOpen: max(xc.eff, oc.eff), probes: pc.eff, soft: soft, origin: t0,
	}

	type token struct {
		gen  uint64
		done func(error)
	}
	var held []token
	var trace []string
	checked := 0 // transitions already compared
	fatalf := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("after %s\nsettings %+v\n%s", strings.Join(trace, "\n"), s, fmt.Sprintf(format, args...))
	}
	allow := func() (token, bool) {
		t.Helper()
		done, err := c.Allow()
		gen, werr := m.allow(clk.t)
		if err != werr || (err == nil) != (done != nil) {
			fatalf("Allow() = (done nil: %t, %v), want %v", done == nil, err, werr)
		}
		return token{gen, done}, err == nil
	}

	for len(in.b) > 0 {
		switch op := pick(10); op {
		case 0, 1, 2:
			tok, ok := allow()
			trace = append(trace, fmt.Sprintf("allow admitted=%t", ok))
			if ok {
				held = append(held, tok)
			}
		case 3:
			if len(held) == 0 {
				continue
			}
			i, kind := pick(len(held)), pick(numKinds)
			tok := held[i]
			held = slices.Delete(held, i, i+1)
			trace = append(trace, fmt.Sprintf("done #%d(%v) from gen %d", i, kindErr[kind], tok.gen))
			tok.done(kindErr[kind])
			m.done(tok.gen, kind, clk.t)
		case 4:
			kind := pick(numKinds)
			tok, ok := allow()
			trace = append(trace, fmt.Sprintf("call(%v) admitted=%t", kindErr[kind], ok))
			if ok {
				tok.done(kindErr[kind])
				m.done(tok.gen, kind, clk.t)
			}
		case 5:
			d := time.Duration(pick(256)) * m.width / 8
			trace = append(trace, "advance "+d.String())
			clk.Advance(d)
		case 6:
			// Land on the open deadline, or a nanosecond either side.
			d := time.Duration(pick(3) - 1)
			if m.state == Open {
				d += m.until.Sub(clk.t)
			}
			d = max(d, 0)
			trace = append(trace, "advance to deadline "+d.String())
			clk.Advance(d)
		case 7:
			trace = append(trace, "State")
			if got, want := c.State(), (func() State { m.refresh(clk.t); return m.state })(); got != want {
				fatalf("State() = %v, want %v", got, want)
			}
		case 8:
			trace = append(trace, "Ready")
			if got, want := c.Ready(), m.ready(clk.t); got != want {
				fatalf("Ready() = %t, want %t", got, want)
			}
		case 9:
			trace = append(trace, "Counts")
			if got, want := c.Counts(), m.counts(clk.t); got != want {
				fatalf("Counts() = %+v, want %+v", got, want)
			}
		}
		// Checks that do not apply the lazy transition, so that the
		// operations above are what applies it.
		if p := c.cur.Load(); p.state != m.state || p.gen != m.gen {
			fatalf("state, generation = %v, %d, want %v, %d", p.state, p.gen, m.state, m.gen)
		}
		if got, want := c.RetryAfter(), m.retryAfter(clk.t); got != want {
			fatalf("RetryAfter() = %v, want %v", got, want)
		}
		if len(got) != len(m.log) || !slices.Equal(got[checked:], m.log[checked:]) {
			fatalf("transitions = %q, want %q", got, m.log)
		}
		checked = len(got)
	}
}

func FuzzCircuit(f *testing.F) {
	f.Add([]byte{})
	// Defaults; five failures, then probes after the open timeout.
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 4, 1, 4, 1, 4, 1, 4, 1, 6, 1, 7, 0, 0, 0, 3, 0, 0, 3, 0, 0, 9})
	// One failure trips; a held closed call reports after the breaker reopened.
	f.Add([]byte{2, 1, 2, 1, 1, 2, 2, 1, 0, 4, 1, 6, 1, 0, 4, 1, 3, 0, 1, 6, 2, 8, 9})
	// Ratio with a small window: outcomes age out.
	f.Add([]byte{1, 2, 3, 2, 0, 0, 3, 0, 4, 0, 4, 1, 5, 40, 4, 1, 4, 1, 9, 5, 255, 9, 4, 1, 4, 1, 9})
	// Canceled and soft probes.
	f.Add([]byte{2, 1, 1, 3, 1, 2, 3, 1, 4, 1, 6, 1, 0, 0, 3, 0, 2, 0, 3, 0, 3, 8, 9, 3, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstModel(t, data)
	})
}

// TestCircuitModel runs the model comparison on a fixed set of
// pseudo-random sequences, so that plain `go test` covers it too.
func TestCircuitModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		data := make([]byte, 8+r.IntN(400))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkAgainstModel(t, data) })
	}
}
