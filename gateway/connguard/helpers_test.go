package connguard

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// run is what a sniffer made of one input: its verdict queue and the
// offsets of every event, for comparing splits and for comparing with Go.
type run struct {
	clean  int64
	term   *framingError
	events []traceRec
}

type traceRec struct {
	ev  traceEvent
	off int64
}

func (r run) String() string {
	return fmt.Sprintf("clean=%d term=%v events=%v", r.clean, r.term, r.events)
}

func (r run) equal(o run) bool {
	return r.clean == o.clean && r.term == o.term && slices.Equal(r.events, o.events)
}

// verdicts lists what successive Check calls would return, one more than
// the queue holds: "ok" for nil, the error text otherwise.
func (r run) verdicts() []string {
	var out []string
	for range r.clean {
		out = append(out, "ok")
	}
	switch r.term {
	case nil:
		out = append(out, "none")
	case opaque:
		out = append(out, "ok")
	default:
		out = append(out, strings.TrimPrefix(r.term.Error(), ErrBadFraming.Error()+": "))
	}
	return out
}

// splitter cuts an input into the pieces successive Reads would return.
type splitter func(in []byte) [][]byte

func whole(in []byte) [][]byte { return [][]byte{in} }

func byteByByte(in []byte) [][]byte {
	out := make([][]byte, len(in))
	for i := range in {
		out[i] = in[i : i+1]
	}
	return out
}

// randomSplits cuts at pseudo-random points drawn from seed (splitmix64), in
// pieces of 1 to 64 bytes.
func randomSplits(seed uint64) splitter {
	return func(in []byte) [][]byte {
		var out [][]byte
		x := seed
		for len(in) > 0 {
			x += 0x9e3779b97f4a7c15
			z := x
			z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
			z = (z ^ z>>27) * 0x94d049bb133111eb
			z ^= z >> 31
			n := min(int(z%64)+1, len(in))
			out = append(out, in[:n])
			in = in[n:]
		}
		return out
	}
}

func sniffWith(in []byte, maxHead int64, queueOptions bool, split splitter) run {
	var r run
	var s sniffer
	s.init(maxHead, queueOptions)
	s.trace = func(ev traceEvent, off int64) { r.events = append(r.events, traceRec{ev, off}) }
	for _, piece := range split(in) {
		if s.term.Load() != nil {
			break
		}
		s.feed(piece)
	}
	r.clean = s.clean.Load()
	r.term = s.term.Load()
	return r
}

func sniffAll(in []byte, split splitter) run {
	return sniffWith(in, DefaultMaxHeadBytes, false, split)
}

// snMsg is one request as the sniffer's trace saw it; -1 for an offset it
// never reached.
type snMsg struct {
	start, headEnd, end int64
}

func (r run) messages() []snMsg {
	var out []snMsg
	for _, e := range r.events {
		switch e.ev {
		case evHead:
			out = append(out, snMsg{e.off, -1, -1})
		case evHeadEnd, evHeadSkip:
			out[len(out)-1].headEnd = e.off
		case evMessageEnd:
			out[len(out)-1].end = e.off
		}
	}
	return out
}

// goMsg is one request as net/http frames it.
type goMsg struct {
	start, headEnd, end int64
	bodyErr             error
	truncated           bool // bodyErr only says that the input ran out
}

type countingReader struct {
	r   io.Reader
	n   int64
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.eof = c.eof || err == io.EOF
	return n, err
}

// goModel parses in the way http.Server does (same parser, same 4 KiB
// bufio.Reader) and reports where each request starts and ends. It stops
// where the server would close the connection.
func goModel(in []byte) []goMsg {
	cr := &countingReader{r: bytes.NewReader(in)}
	br := bufio.NewReaderSize(cr, 4096)
	pos := func() int64 { return cr.n - int64(br.Buffered()) }
	var out []goMsg
	for {
		start := pos()
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		m := goMsg{start: start, headEnd: pos()}
		_, m.bodyErr = io.Copy(io.Discard, req.Body)
		m.end = pos()
		// On a connection the trailer look-ahead would wait for more
		// bytes; at the end of the input it fails instead.
		m.truncated = truncated(m.bodyErr) ||
			m.bodyErr != nil && strings.Contains(m.bodyErr.Error(), "suspiciously long trailer") &&
				cr.eof && br.Buffered() < br.Size()
		out = append(out, m)
		if m.bodyErr != nil || req.Method == "PRI" {
			return out
		}
	}
}

// truncated reports whether err only says that the input ran out.
func truncated(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		err != nil && strings.Contains(err.Error(), "unexpected EOF")
}

// compareWithGo checks the property the guard rests on: for every request
// net/http would hand to a handler, the sniffer either queued a clean
// verdict for exactly the same bytes, or refused at or before it.
func compareWithGo(t testing.TB, in []byte, r run) {
	t.Helper()
	sn := r.messages()
	for i, g := range goModel(in) {
		if i >= len(sn) {
			if r.term == nil {
				t.Fatalf("request %d: Go parsed it at %d, the sniffer never saw it start (%v)", i, g.start, r)
			}
			return
		}
		m := sn[i]
		if m.start != g.start {
			t.Fatalf("request %d: sniffer start %d, Go start %d (%v)", i, m.start, g.start, r)
		}
		if m.headEnd < 0 {
			if r.term == nil {
				t.Fatalf("request %d: Go parsed its head (end %d), the sniffer did not finish it and did not refuse (%v)", i, g.headEnd, r)
			}
			return
		}
		if m.headEnd != g.headEnd {
			t.Fatalf("request %d: sniffer head end %d, Go head end %d (%v)", i, m.headEnd, g.headEnd, r)
		}
		if g.bodyErr != nil {
			if m.end >= 0 {
				t.Fatalf("request %d: Go failed the body (%v), the sniffer ended it at %d (%v)", i, g.bodyErr, m.end, r)
			}
			if !g.truncated && r.term == nil {
				t.Fatalf("request %d: Go failed the body (%v), the sniffer did not refuse (%v)", i, g.bodyErr, r)
			}
			return
		}
		if m.end < 0 {
			if r.term == nil {
				t.Fatalf("request %d: Go ended the body at %d, the sniffer neither did nor refused (%v)", i, g.end, r)
			}
			return
		}
		if m.end != g.end {
			t.Fatalf("request %d: sniffer body end %d, Go body end %d (%v)", i, m.end, g.end, r)
		}
	}
}

// checkSplits sniffs in whole, byte by byte and in random pieces, requires
// the same result each time, and returns it.
func checkSplits(t testing.TB, in []byte, maxHead int64, seed uint64) run {
	t.Helper()
	want := sniffWith(in, maxHead, false, whole)
	for name, split := range map[string]splitter{
		"byte by byte": byteByByte,
		"random":       randomSplits(seed),
	} {
		if got := sniffWith(in, maxHead, false, split); !got.equal(want) {
			t.Fatalf("%s: %v, want %v (as one piece)", name, got, want)
		}
	}
	return want
}

// checkNoGoroutineLeak fails t if, once the test and its other cleanups are
// done, more goroutines run than when it was called.
func checkNoGoroutineLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines = %d, want <= %d\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
