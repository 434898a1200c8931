package tracecontext

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// specExample is the traceparent example from the specification.
const (
	specExample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	specTrace   = "4bf92f3577b34da6a3ce929d0e0e4736"
	specParent  = "00f067aa0ba902b7"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in      string
		ok            bool
		trace, parent string
		flags         byte
	}{
		{"spec example", specExample, true, specTrace, specParent, 0x01},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, specTrace, specParent, 0x00},
		{"unknown flags kept by Parse", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", true, specTrace, specParent, 0x09},
		{"all flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", true, specTrace, specParent, 0xff},
		{"future version, same length", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, specTrace, specParent, 0x01},
		{"future version, extra field", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like", true, specTrace, specParent, 0x01},
		{"future version, empty extra field", "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-", true, specTrace, specParent, 0x00},

		{"empty", "", false, "", "", 0},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "", "", 0},
		{"version ff with extra", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false, "", "", 0},
		{"version uppercase", "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "", "", 0},
		{"version not hex", "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "", "", 0},
		{"version 3 digits", "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "", "", 0},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, "", "", 0},
		{"zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, "", "", 0},
		{"uppercase trace id", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, "", "", 0},
		{"uppercase parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", false, "", "", 0},
		{"uppercase flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", false, "", "", 0},
		{"non-hex trace id", "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01", false, "", "", 0},
		{"non-hex parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b.-01", false, "", "", 0},
		{"non-hex flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", false, "", "", 0},
		{"short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false, "", "", 0},
		{"long trace id", "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", false, "", "", 0},
		{"short parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", false, "", "", 0},
		{"long parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01", false, "", "", 0},
		{"short flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false, "", "", 0},
		{"long flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", false, "", "", 0},
		{"version 00 extra field", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false, "", "", 0},
		{"version 00 trailing dash", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false, "", "", 0},
		{"future version, no dash after flags", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false, "", "", 0},
		{"future version, short", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false, "", "", 0},
		{"wrong separator", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false, "", "", 0},
		{"leading space", " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "", "", 0},
		{"trailing space", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", false, "", "", 0},
		{"tab separator", "00\t4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Parse(tt.in)
			if ok != tt.ok {
				t.Fatalf("Parse(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			}
			if !ok {
				if got != (Context{}) {
					t.Errorf("Parse(%q) = %+v on failure, want zero Context", tt.in, got)
				}
				return
			}
			if s := got.TraceID.String(); s != tt.trace {
				t.Errorf("Parse(%q).TraceID = %s, want %s", tt.in, s, tt.trace)
			}
			if s := got.ParentID.String(); s != tt.parent {
				t.Errorf("Parse(%q).ParentID = %s, want %s", tt.in, s, tt.parent)
			}
			if got.Flags != tt.flags {
				t.Errorf("Parse(%q).Flags = %#x, want %#x", tt.in, got.Flags, tt.flags)
			}
			if !got.SpanID.IsZero() || got.State != "" {
				t.Errorf("Parse(%q) SpanID = %s State = %q, want zero", tt.in, got.SpanID, got.State)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	got, ok := Parse(specExample)
	if !ok {
		t.Fatalf("Parse(%q) failed", specExample)
	}
	wantTrace := TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	wantParent := SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	if got.TraceID != wantTrace || got.ParentID != wantParent {
		t.Errorf("Parse() = %x/%x, want %x/%x", got.TraceID, got.ParentID, wantTrace, wantParent)
	}
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestStartContinues(t *testing.T) {
	tests := []struct {
		name      string
		h         http.Header
		wantFlags byte
		wantState string
	}{
		{"sampled", header("traceparent", specExample), 0x01, ""},
		{"not sampled", header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), 0x00, ""},
		{"reserved flags cleared", header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"), 0x03, ""},
		{"future version", header("traceparent", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"), 0x01, ""},
		{"state kept", header("traceparent", specExample, "tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
			0x01, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{"state lines combined", header("traceparent", specExample, "tracestate", "congo=t61rcWkgMzE", "tracestate", "rojo=00f067aa0ba902b7"),
			0x01, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{"invalid state dropped", header("traceparent", specExample, "tracestate", "Congo=upper"), 0x01, ""},
		{"duplicate key across lines dropped", header("traceparent", specExample, "tracestate", "a=1", "tracestate", "a=2"), 0x01, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := Parse(tt.h.Get("traceparent"))
			got := Start(tt.h)
			if got.TraceID != in.TraceID {
				t.Errorf("Start().TraceID = %s, want %s (continued)", got.TraceID, in.TraceID)
			}
			if got.ParentID != in.ParentID {
				t.Errorf("Start().ParentID = %s, want incoming parent %s", got.ParentID, in.ParentID)
			}
			if got.SpanID.IsZero() || got.SpanID == in.ParentID {
				t.Errorf("Start().SpanID = %s, want a new non-zero span id", got.SpanID)
			}
			if got.Flags != tt.wantFlags {
				t.Errorf("Start().Flags = %#x, want %#x", got.Flags, tt.wantFlags)
			}
			if got.State != tt.wantState {
				t.Errorf("Start().State = %q, want %q", got.State, tt.wantState)
			}
			if !got.IsValid() {
				t.Errorf("Start().IsValid() = false, want true")
			}
		})
	}
}

func TestStartReplaces(t *testing.T) {
	malformed, _ := Parse(strings.Replace(specExample, "00-", "01-", 1))
	tests := []struct {
		name string
		h    http.Header
	}{
		{"absent", header()},
		{"absent, state ignored", header("tracestate", "congo=t61rcWkgMzE")},
		{"malformed", header("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "tracestate", "congo=t61rcWkgMzE")},
		{"version ff", header("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		{"zero parent", header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")},
		{"repeated header", header("traceparent", specExample, "traceparent", specExample)},
		{"empty value", header("traceparent", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Start(tt.h)
			if got.TraceID.IsZero() || got.TraceID == malformed.TraceID {
				t.Errorf("Start().TraceID = %s, want a new random trace id", got.TraceID)
			}
			if !got.ParentID.IsZero() {
				t.Errorf("Start().ParentID = %s, want zero for a new trace", got.ParentID)
			}
			if got.SpanID.IsZero() {
				t.Errorf("Start().SpanID is zero, want random")
			}
			if got.Flags != FlagSampled {
				t.Errorf("Start().Flags = %#x, want %#x", got.Flags, FlagSampled)
			}
			if got.State != "" {
				t.Errorf("Start().State = %q, want empty for a new trace", got.State)
			}
		})
	}
}

func TestNewIDsUnique(t *testing.T) {
	traces := make(map[TraceID]bool)
	spans := make(map[SpanID]bool)
	for range 1000 {
		c := New()
		if c.TraceID.IsZero() || c.SpanID.IsZero() || traces[c.TraceID] || spans[c.SpanID] {
			t.Fatalf("New() = %+v: zero or repeated id", c)
		}
		traces[c.TraceID], spans[c.SpanID] = true, true
	}
}

func TestValidTracestate(t *testing.T) {
	members := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("k")
			b.WriteString(strconv.Itoa(i))
			b.WriteString("=v")
		}
		return b.String()
	}
	// exactly 512 bytes: "a=" plus 510 characters would exceed the 256-byte
	// value limit, so use two members.
	len512 := "a=" + strings.Repeat("v", 256) + ",b=" + strings.Repeat("w", 251)
	tests := []struct {
		in   string
		want bool
	}{
		{"congo=t61rcWkgMzE", true},
		{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", true},
		{"rojo=1 , \tcongo=2", true},
		{"rojo=1,,congo=2", true},
		{"rojo=1, ,congo=2", true},
		{"tenant@system=v", true},
		{"0tenant@sys-1=v", true},
		{"a_-*/9=v", true},
		{"k= leading space ok", true},
		{"k=!\"#$%&'()*+-./:;<>?@[]^_`{|}~", true},
		{members(32), true},
		{len512, true},
		{strings.Repeat("k", 256) + "=v", true},

		{"", false},
		{" , ", false},
		{members(33), false},
		{len512 + "x", false},
		{strings.Repeat("k", 257) + "=v", false},
		{"k=" + strings.Repeat("v", 257), false},
		{"Congo=v", false},
		{"0simple=v", false},
		{"k", false},
		{"k=", false},
		{"=v", false},
		{"k=a=b", false},
		{"k=caf\u00e9", false},
		{"k=tab\there", false},
		{"a=1,a=2", false},
		{"tenant@=v", false},
		{"@system=v", false},
		{"tenant@0system=v", false},
		{"tenant@systemtoolong15=v", false},
		{"t@s@x=v", false},
		{"_k=v", false},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		t.Run(name, func(t *testing.T) {
			if got := ValidTracestate(tt.in); got != tt.want {
				t.Errorf("ValidTracestate(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if n := len(len512); n != 512 {
		t.Fatalf("len512 has %d bytes, test is miswritten", n)
	}
}

func TestTraceparentFormat(t *testing.T) {
	in, _ := Parse(specExample)
	c := in
	c.SpanID = SpanID{0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3}
	c.Flags = 0xa5
	const want = "00-4bf92f3577b34da6a3ce929d0e0e4736-deadbeef00010203-a5"
	if got := c.Traceparent(); got != want {
		t.Errorf("Traceparent() = %q, want %q", got, want)
	}
	if got := string(c.AppendTraceparent([]byte("traceparent: "))); got != "traceparent: "+want {
		t.Errorf("AppendTraceparent() = %q, want prefix kept", got)
	}
	if got := c.TraceID.String(); got != specTrace {
		t.Errorf("TraceID.String() = %q, want %q", got, specTrace)
	}
	if got := string(c.SpanID.AppendHex([]byte("x"))); got != "xdeadbeef00010203" {
		t.Errorf("SpanID.AppendHex() = %q, want %q", got, "xdeadbeef00010203")
	}
}

func TestInject(t *testing.T) {
	c, _ := Parse(specExample)
	c.SpanID = SpanID{1, 2, 3, 4, 5, 6, 7, 8}
	c.State = "congo=t61rcWkgMzE"
	h := header("traceparent", "stale", "tracestate", "stale=1", "tracestate", "stale=2")
	c.Inject(h)
	if got, want := h.Values("traceparent"), []string{"00-" + specTrace + "-0102030405060708-01"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("traceparent after Inject = %q, want %q", got, want)
	}
	if got := h.Values("tracestate"); len(got) != 1 || got[0] != c.State {
		t.Errorf("tracestate after Inject = %q, want [%q]", got, c.State)
	}
	c.State = ""
	c.Inject(h)
	if got := h.Values("tracestate"); len(got) != 0 {
		t.Errorf("tracestate after Inject with empty State = %q, want none", got)
	}
}

func TestChild(t *testing.T) {
	c := Start(header("traceparent", specExample, "tracestate", "a=1"))
	ch := c.Child()
	if ch.TraceID != c.TraceID || ch.ParentID != c.SpanID || ch.SpanID.IsZero() || ch.SpanID == c.SpanID ||
		ch.Flags != c.Flags || ch.State != c.State {
		t.Errorf("Child() = %+v of %+v, want same trace, parent = span, new span", ch, c)
	}
}

func TestNewContextFromContext(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Errorf("FromContext(Background) ok = true, want false")
	}
	c := New()
	got, ok := FromContext(NewContext(context.Background(), c))
	if !ok || got != c {
		t.Errorf("FromContext(NewContext(c)) = %+v, %v, want %+v, true", got, ok, c)
	}
}

func TestSpan(t *testing.T) {
	start := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Span{Name: "users", Start: start, End: start.Add(1500 * time.Millisecond),
		Attributes: []Attr{{"http.method", "GET"}}, Status: 200}
	if d := s.Duration(); d != 1500*time.Millisecond {
		t.Errorf("Duration() = %v, want 1.5s", d)
	}
	c := s.Clone()
	s.Attributes[0].Value = "POST"
	if c.Attributes[0].Value != "GET" || c.Name != "users" || c.Status != 200 {
		t.Errorf("Clone() = %+v, want an independent copy", c)
	}
	var got *Span
	var e Exporter = ExporterFunc(func(s *Span) { got = s })
	e.ExportSpan(s)
	if got != s {
		t.Errorf("ExporterFunc did not receive the span")
	}
}

func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	h := header("traceparent", specExample, "tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
	buf := make([]byte, 0, 64)
	var sink Context
	tests := []struct {
		name string
		f    func()
	}{
		{"Parse", func() { sink, _ = Parse(specExample) }},
		{"Start continue", func() { sink = Start(h) }},
		{"Start new", func() { sink = Start(http.Header{}) }},
		{"AppendTraceparent", func() { buf = sink.AppendTraceparent(buf[:0]) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s allocs = %v, want 0", tt.name, n)
		}
	}
}

// FuzzParse checks that Parse never panics, accepts only well-formed values
// and that an accepted value round-trips through Traceparent when the parsed
// parent is used as the span.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		specExample,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := Parse(s)
		if !ok {
			return
		}
		if c.TraceID.IsZero() || c.ParentID.IsZero() || len(s) < traceparentLen || s[:2] == "ff" {
			t.Fatalf("Parse(%q) accepted an invalid value: %+v", s, c)
		}
		c.SpanID = c.ParentID
		out := c.Traceparent()
		if s[:2] == "00" && out != s {
			t.Fatalf("Parse(%q).Traceparent() = %q, want the input back", s, out)
		}
		// A future version is downgraded to 00 and its extra fields dropped.
		if s[:2] != "00" && out != "00"+s[2:traceparentLen] {
			t.Fatalf("Parse(%q).Traceparent() = %q, want %q", s, out, "00"+s[2:traceparentLen])
		}
		again, ok := Parse(out)
		if !ok || again.TraceID != c.TraceID || again.ParentID != c.ParentID || again.Flags != c.Flags {
			t.Fatalf("Parse(%q) = %+v, %v, want %+v", out, again, ok, c)
		}
	})
}
