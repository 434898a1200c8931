package connguard

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	get     = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	post5   = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
	chunked = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"
	clte = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)

// Verdict texts, as run.verdicts reports them.
var (
	ok   = "ok"
	none = "none" // no terminal verdict: the sniffer waits for more bytes
)

func reason(e *framingError) string {
	return strings.TrimPrefix(e.Error(), ErrBadFraming.Error()+": ")
}

func TestSnifferVerdicts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // successive Check results
	}{
		{"empty", "", []string{none}},
		{"clean GET", get, []string{ok, none}},
		{"clean POST", post5, []string{ok, none}},
		{"clean chunked with trailers", chunked, []string{ok, none}},
		{"HTTP/1.0 GET", "GET / HTTP/1.0\r\n\r\n", []string{ok, none}},
		{"HTTP/1.2 chunked", "POST / HTTP/1.2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"three clean pipelined", get + post5 + chunked, []string{ok, ok, ok, none}},
		{"Content-Length with leading zeros", "POST / HTTP/1.1\r\nContent-Length: 005\r\n\r\nhello" + get, []string{ok, ok, none}},
		{"Content-Length with OWS", "POST / HTTP/1.1\r\nContent-Length: \t5 \r\n\r\nhello" + get, []string{ok, ok, none}},
		{"Content-Length 0", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + get, []string{ok, ok, none}},
		{"Transfer-Encoding Chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"Transfer-Encoding with OWS", "POST / HTTP/1.1\r\nTransfer-Encoding:  chunked\t\r\n\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"obs-text in a value", "GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", []string{ok, none}},
		{"empty value", "GET / HTTP/1.1\r\nX:\r\n\r\n", []string{ok, none}},
		{"chunk size with leading zeros", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0005\r\nhello\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"chunk size with trailing whitespace", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \t\r\nhello\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"chunk extension with whitespace", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5; a = \"b\" \r\nhello\r\n0;x\r\n\r\n" + get, []string{ok, ok, none}},
		{"head inside a chunked body", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(clte), clte) + get, []string{ok, ok, none}},
		{"head inside a Content-Length body", fmt.Sprintf("POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s", len(clte), clte) + get,
			[]string{ok, ok, none}},

		{"CL then TE", clte, []string{reason(errCLTE)}},
		{"TE then CL", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", []string{reason(errCLTE)}},
		{"CL and TE, odd case", "POST / HTTP/1.1\r\ncontent-LENGTH: 5\r\nTRANSFER-encoding: Chunked\r\n\r\n", []string{reason(errCLTE)}},
		{"CL and TE gzip", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n", []string{reason(errCLTE)}},
		{"pipelined clean, CL+TE, clean", get + clte + get, []string{ok, reason(errCLTE)}},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []string{reason(errTE10)}},
		{"two TE fields", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", []string{reason(errMultiTE)}},
		{"TE list", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", []string{reason(errTE)}},
		{"TE chunkedx", "POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n", []string{reason(errTE)}},
		{"TE empty", "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n", []string{reason(errTE)}},
		{"duplicate equal CL", "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", []string{reason(errMultiCL)}},
		{"CL with plus sign", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", []string{reason(errCL)}},
		{"CL with minus sign", "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", []string{reason(errCL)}},
		{"CL hex", "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", []string{reason(errCL)}},
		{"CL two numbers", "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n", []string{reason(errCL)}},
		{"CL list", "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", []string{reason(errCL)}},
		{"CL empty", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", []string{reason(errCL)}},
		{"CL 2^63", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", []string{reason(errCL)}},
		{"CL 2^63-1", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n", []string{ok, none}},
		{"obs-fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", []string{reason(errObsFold)}},
		{"obs-fold of TE", "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", []string{reason(errTE)}},
		{"leading whitespace on first field", "GET / HTTP/1.1\r\n\tX: a\r\n\r\n", []string{reason(errObsFold)}},
		{"space before colon", "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", []string{reason(errNameSpace)}},
		{"tab before colon", "POST / HTTP/1.1\r\nContent-Length\t: 5\r\n\r\n", []string{reason(errNameSpace)}},
		{"missing colon", "GET / HTTP/1.1\r\nX\r\n\r\n", []string{reason(errName)}},
		{"empty name", "GET / HTTP/1.1\r\n: x\r\n\r\n", []string{reason(errName)}},
		{"bare LF ending the request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", []string{reason(errBareLF)}},
		{"bare LF ending a field", "GET / HTTP/1.1\r\nHost: x\n\r\n", []string{reason(errBareLF)}},
		{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n", []string{reason(errBareLF)}},
		{"bare LF in CL", "POST / HTTP/1.1\r\nContent-Length: 5\n\r\n", []string{reason(errBareLF)}},
		{"CR inside a value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", []string{reason(errCR)}},
		{"control byte in a value", "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", []string{reason(errValue)}},
		{"DEL in a value", "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", []string{reason(errValue)}},
		{"leading CRLF", "\r\n" + get, []string{reason(errRequestLine)}},
		{"double space", "GET  / HTTP/1.1\r\n\r\n", []string{reason(errRequestLine)}},
		{"no version", "GET /\r\n\r\n", []string{reason(errRequestLine)}},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", []string{reason(errVersion)}},
		{"HTTP/1.10", "GET / HTTP/1.10\r\n\r\n", []string{reason(errVersion)}},
		{"lower-case version", "GET / http/1.1\r\n\r\n", []string{reason(errVersion)}},
		{"HTTP/2.0 for GET", "GET / HTTP/2.0\r\n\r\n", []string{reason(errVersion)}},
		{"binary", "\x16\x03\x01\x02\x00", []string{reason(errRequestLine)}},

		{"OPTIONS * gets no verdict", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + get, []string{ok, none}},
		{"OPTIONS * then CL+TE", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + clte, []string{reason(errCLTE)}},
		{"OPTIONS / gets a verdict", "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n" + get, []string{ok, ok, none}},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", []string{ok, ok}},
		{"PRI with fields", "PRI * HTTP/2.0\r\nHost: x\r\n\r\n", []string{reason(errVersion)}},
		{"upgrade request then more HTTP", "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + clte,
			[]string{ok, reason(errCLTE)}},
		{"upgrade request then a WebSocket frame", "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85abcd",
			[]string{ok, reason(errRequestLine)}},

		{"chunk size too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n", []string{ok, reason(errChunkSize)}},
		{"chunk size 16 digits", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"chunk size missing", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n", []string{ok, reason(errChunkSize)}},
		{"chunk size then space then extension", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n", []string{ok, reason(errChunkSize)}},
		{"chunk size with a sign", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", []string{ok, reason(errChunkSize)}},
		{"chunk line bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", []string{ok, reason(errBareLF)}},
		{"chunk extension bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x\nhello\r\n0\r\n\r\n", []string{ok, reason(errBareLF)}},
		{"CR inside a chunk extension", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x\ry\r\nhello\r\n0\r\n\r\n", []string{ok, reason(errCR)}},
		{"chunk data too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n", []string{ok, reason(errChunkCRLF)}},
		{"chunk data bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", []string{ok, reason(errChunkCRLF)}},
		{"trailer bare LF smuggling", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\n" + get, []string{ok, reason(errBareLF)}},
		{"trailer obs-fold", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n" + get, []string{ok, reason(errObsFold)}},
		{"trailer may repeat CL and TE", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + get,
			[]string{ok, ok, none}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			r := checkSplits(t, in, DefaultMaxHeadBytes, uint64(len(tt.name)))
			if got := r.verdicts(); !slices.Equal(got, tt.want) {
				t.Errorf("verdicts = %q, want %q", got, tt.want)
			}
			compareWithGo(t, in, r)
		})
	}
}

func TestSnifferQueueOptions(t *testing.T) {
	in := []byte("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + get)
	r := sniffWith(in, DefaultMaxHeadBytes, true, whole)
	if got, want := r.verdicts(), []string{ok, ok, none}; !slices.Equal(got, want) {
		t.Errorf("verdicts with DisableGeneralOptionsHandler = %q, want %q", got, want)
	}
}

// head builds a GET head of exactly n bytes.
func head(n int) string {
	const pre, post = "GET / HTTP/1.1\r\nX: ", "\r\n\r\n"
	return pre + strings.Repeat("a", n-len(pre)-len(post)) + post
}

func TestSnifferHeadLimit(t *testing.T) {
	tests := []struct {
		name    string
		maxHead int64
		in      string
		want    []string
	}{
		{"exactly the limit", 4096, head(4096) + get, []string{ok, ok, none}},
		{"one byte over", 4096, head(4097) + get, []string{reason(errHeadTooLarge)}},
		{"second head over", 4096, get + head(4097), []string{ok, reason(errHeadTooLarge)}},
		{"over, never ending", 4096, head(8000)[:5000], []string{reason(errHeadTooLarge)}},
		// Refused as soon as the limit is reached, without waiting for a
		// byte that can only make it too large.
		{"unfinished at exactly the limit", 4096, head(8000)[:4096], []string{reason(errHeadTooLarge)}},
		{"unfinished one byte short", 4096, head(8000)[:4095], []string{none}},
		{"default limit exactly", DefaultMaxHeadBytes, head(DefaultMaxHeadBytes) + get, []string{ok, ok, none}},
		{"default limit plus one", DefaultMaxHeadBytes, head(DefaultMaxHeadBytes + 1), []string{reason(errHeadTooLarge)}},
		// The limit is on the head only: bodies may be any size.
		{"large body", 64, "POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("b", 5000) + get, []string{ok, ok, none}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkSplits(t, []byte(tt.in), tt.maxHead, 7)
			if got := r.verdicts(); !slices.Equal(got, tt.want) {
				t.Errorf("verdicts = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSnifferChunkLimits(t *testing.T) {
	const pre = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	// chunkLine builds "5;xxx…\r\n" of exactly n bytes.
	chunkLine := func(n int) string { return "5;" + strings.Repeat("x", n-4) + "\r\n" }
	// trailer builds a trailer section of exactly n bytes.
	trailer := func(n int) string { return "X: " + strings.Repeat("t", n-7) + "\r\n\r\n" }
	// tiny makes chunks of one byte with a long extension each, to run
	// up the non-data allowance.
	tiny := func(k int) string { return strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\nz\r\n", k) }
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"chunk line of 4096 bytes", pre + chunkLine(4096) + "hello\r\n0\r\n\r\n" + get, []string{ok, ok, none}},
		{"chunk line of 4097 bytes", pre + chunkLine(4097) + "hello\r\n0\r\n\r\n" + get, []string{ok, reason(errChunkLine)}},
		{"trailer of 4096 bytes", pre + "0\r\n" + trailer(4096) + get, []string{ok, ok, none}},
		{"trailer of 4097 bytes", pre + "0\r\n" + trailer(4097) + get, []string{ok, reason(errTrailerSize)}},
		{"overhead within allowance", pre + tiny(150) + "0\r\n\r\n" + get, []string{ok, ok, none}},
		{"overhead beyond allowance", pre + tiny(200) + "0\r\n\r\n" + get, []string{ok, reason(errChunkOverhead)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			r := checkSplits(t, in, DefaultMaxHeadBytes, 3)
			if got := r.verdicts(); !slices.Equal(got, tt.want) {
				t.Errorf("verdicts = %q, want %q", got, tt.want)
			}
			compareWithGo(t, in, r)
		})
	}
}

func TestPopVerdicts(t *testing.T) {
	var s sniffer
	s.init(DefaultMaxHeadBytes, false)
	s.feed([]byte(get + get))
	for i := range 2 {
		if err := s.pop(); err != nil {
			t.Fatalf("pop() #%d = %v, want nil", i, err)
		}
	}
	if err := s.pop(); err != errNoVerdict || !errors.Is(err, ErrBadFraming) {
		t.Fatalf("pop() with an empty queue = %v, want %v", err, errNoVerdict)
	}
	s.feed([]byte(clte))
	for i := range 2 {
		if err := s.pop(); err != errCLTE {
			t.Fatalf("pop() #%d after CL+TE = %v, want %v (sticky)", i, err, errCLTE)
		}
	}
	// The first terminal verdict wins.
	s.stop(errHijacked)
	if err := s.pop(); err != errCLTE {
		t.Fatalf("pop() after a late stop = %v, want %v", err, errCLTE)
	}
}

func TestSnifferAllocs(t *testing.T) {
	in := []byte(get + post5 + chunked + "OPTIONS * HTTP/1.1\r\n\r\n" + clte)
	var s sniffer
	allocs := testing.AllocsPerRun(100, func() {
		s = sniffer{}
		s.init(DefaultMaxHeadBytes, false)
		for i := range in {
			s.feed(in[i : i+1])
		}
		for s.pop() == nil {
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per run = %v, want 0", allocs)
	}
}
