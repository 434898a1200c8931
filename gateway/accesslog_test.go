package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testLine(path string) accessLine {
	return accessLine{
		time: time.Date(2026, 11, 25, 20, 3, 56, 123456789, time.UTC), level: slog.LevelWarn,
		service: "records", instance: "127.0.0.1:8087", route: "records", method: "GET", path: path,
		status: 502, duration: 1234567 * time.Nanosecond, bytes: 101,
		clientIP: netip.MustParseAddr("2001:db8::7"), requestID: "5e49ef22-4855-4f5d-a9b9-1ca752bf0dae",
		traceID: [16]byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}, attempts: 2,
	}
}

// The direct encoder must say what slog's JSON handler says about the same
// request, whatever bytes the client put in the path.
func TestAccessLogJSONMatchesSlog(t *testing.T) {
	paths := []string{
		"/api/v1/records/rec123",
		`/a"b\c`,
		"/tab\there/new\nline/cr\r",
		"/\x00\x01\x1f\x7f",
		"/<script>&amp;",
		"/caf\u00e9/\u65e5\u672c/\U0001F600",
		"/bad\xff\xfeutf8/\xe2\x82",
		"/sep\u2028\u2029",
		"",
	}
	for _, p := range paths {
		l := testLine(p)
		var fast, std bytes.Buffer
		NewAccessLog(&fast, "json").Handler().(*accessLogHandler).log(&l)
		l.logTo(slog.New(slog.NewJSONHandler(&std, nil)))
		var a, b map[string]any
		if err := json.Unmarshal(fast.Bytes(), &a); err != nil {
			t.Fatalf("path %q: fast line is not JSON: %v: %s", p, err, fast.Bytes())
		}
		if err := json.Unmarshal(std.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
		if ft, err := time.Parse(time.RFC3339Nano, a["time"].(string)); err != nil || !ft.Equal(l.time) {
			t.Errorf("time = %v (%v), want %v", a["time"], err, l.time)
		}
		delete(a, "time")
		delete(b, "time") // slog stamps its own
		fa, _ := json.Marshal(a)
		fb, _ := json.Marshal(b)
		if !bytes.Equal(fa, fb) {
			t.Errorf("path %q:\nfast %s\nslog %s", p, fa, fb)
		}
		if !bytes.HasSuffix(fast.Bytes(), []byte("}\n")) || bytes.Count(fast.Bytes(), []byte("\n")) != 1 {
			t.Errorf("path %q: not one line: %q", p, fast.Bytes())
		}
	}
}

func TestAccessLogText(t *testing.T) {
	l := testLine("/api/v1/records")
	var out bytes.Buffer
	NewAccessLog(&out, "text").Handler().(*accessLogHandler).log(&l)
	want := "time=2026-11-25T20:03:56.123Z level=WARN msg=request service=records instance=127.0.0.1:8087 route=records method=GET path=/api/v1/records status=502 duration=1.234567ms duration_ms=1.234 bytes=101 client_ip=2001:db8::7 request_id=5e49ef22-4855-4f5d-a9b9-1ca752bf0dae trace_id=4bf92f3577b34da6a3ce929d0e0e4736 attempts=2\n"
	if out.String() != want {
		t.Errorf("text line\n got %q\nwant %q", out.String(), want)
	}
	for _, p := range []string{"/a b", "/x=y", `/q"`, "/caf\u00e9", "/nl\n", ""} {
		l := testLine(p)
		out.Reset()
		NewAccessLog(&out, "text").Handler().(*accessLogHandler).log(&l)
		s := out.String()
		i := strings.Index(s, " path=") + len(" path=")
		j := strings.Index(s, " status=")
		got, err := strconv.Unquote(s[i:j])
		if err != nil || got != p {
			t.Errorf("path %q logged as %s (%v)", p, s[i:j], err)
		}
	}
}

func TestAppendDurationMatchesString(t *testing.T) {
	ds := []time.Duration{0, 1, 999, 1000, 1001, 1500, 999999, time.Millisecond, 1234567, time.Second,
		time.Second + time.Nanosecond, 90 * time.Second, time.Hour, time.Hour + time.Nanosecond,
		-1, -1500 * time.Microsecond, 1<<63 - 1, -1 << 63}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		ds = append(ds, time.Duration(r.Int64N(int64(10*time.Hour))), time.Duration(r.Int64N(int64(10*time.Millisecond))))
	}
	for _, d := range ds {
		if got := string(appendDuration(nil, d)); got != d.String() {
			t.Fatalf("appendDuration(%d) = %q, want %q", int64(d), got, d.String())
		}
	}
}

func TestAccessLogDoesNotAllocate(t *testing.T) {
	h := NewAccessLog(io.Discard, "json").Handler().(*accessLogHandler)
	l := testLine("/api/v1/records/rec123")
	h.log(&l)
	if n := testing.AllocsPerRun(1000, func() { h.log(&l) }); n != 0 {
		t.Errorf("%v allocs per line", n)
	}
}

// A level above INFO (an operator's choice for the access logger) drops
// request lines.
func TestAccessLogHonoursLevel(t *testing.T) {
	var out bytes.Buffer
	h := &accessLogHandler{w: &out, Handler: slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelError})}
	l := testLine("/x")
	h.log(&l)
	if out.Len() != 0 {
		t.Errorf("logged below the level: %s", out.Bytes())
	}
}

func BenchmarkAccessLog(b *testing.B) {
	l := testLine("/api/v1/records/rec123")
	b.Run("direct", func(b *testing.B) {
		h := NewAccessLog(io.Discard, "json").Handler().(*accessLogHandler)
		b.ReportAllocs()
		for b.Loop() {
			h.log(&l)
		}
	})
	b.Run("slog", func(b *testing.B) {
		lg := slog.New(slog.NewJSONHandler(io.Discard, nil))
		b.ReportAllocs()
		for b.Loop() {
			l.logTo(lg)
		}
	})
}
