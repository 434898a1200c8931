package h1

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"testing"
)

// heads returns what writeHead and Request.Write make of req, each as its
// request line followed by its sorted header lines; ok is writeHead's
// answer.
func heads(t *testing.T, req *http.Request) (mine, std []string, ok bool) {
	t.Helper()
	var a, b bytes.Buffer
	wa := bufio.NewWriter(&a)
	ok = writeHead(wa, req)
	wa.Flush()
	if err := req.Write(&b); err != nil {
		if ok {
			t.Fatalf("writeHead wrote a request Request.Write refuses (%v):\n%s", err, a.String())
		}
		return nil, nil, ok
	}
	return lines(t, a.String(), ok), lines(t, b.String(), true), ok
}

func lines(t *testing.T, s string, want bool) []string {
	t.Helper()
	if !want {
		if s != "" {
			t.Fatalf("writeHead declined but wrote %q", s)
		}
		return nil
	}
	head, rest, found := strings.Cut(s, "\r\n\r\n")
	if !found || rest != "" {
		t.Fatalf("not one request head: %q", s)
	}
	l := strings.Split(head, "\r\n")
	slices.Sort(l[1:])
	return l
}

func TestWriteHeadMatchesRequestWrite(t *testing.T) {
	mk := func(method, url string, h http.Header) *http.Request {
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h != nil {
			req.Header = h
		}
		return req
	}
	cases := map[string]*http.Request{
		"plain GET": mk("GET", "http://127.0.0.1:9000/api/v1/items?x=1&y=%20", nil),
		"gateway's upstream request": mk("GET", "http://10.0.0.7:8080/api/v1/records/abc", http.Header{
			"Accept":            {"*/*"},
			"Authorization":     {"Bearer abc.def.ghi"},
			"Traceparent":       {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			"X-Auth-Method":     {"jwt"},
			"X-Auth-Subject":    {"u1"},
			"X-Forwarded-For":   {"127.0.0.1, 10.1.1.1"},
			"X-Forwarded-Host":  {"api.example.com"},
			"X-Forwarded-Proto": {"https"},
			"X-Real-Ip":         {"127.0.0.1"},
			"X-Request-Id":      {"4ec1f5c0-51d3-4f31-9c0a-8c2e1b1f3a11"},
			"X-User-Id":         {"u1"},
			"User-Agent":        {"curl/8"},
		}),
		"HEAD":                        mk("HEAD", "http://h:1/", http.Header{"Accept": {"a"}}),
		"OPTIONS":                     mk("OPTIONS", "http://h:1/x", nil),
		"OPTIONS *":                   mk("OPTIONS", "http://h:1/", nil),
		"empty User-Agent not sent":   mk("GET", "http://h:1/", http.Header{"User-Agent": {""}}),
		"User-Agent without values":   mk("GET", "http://h:1/", http.Header{"User-Agent": nil}),
		"only the first User-Agent":   mk("GET", "http://h:1/", http.Header{"User-Agent": {" a ", "b"}}),
		"blank User-Agent sent empty": mk("GET", "http://h:1/", http.Header{"User-Agent": {" \t"}}),
		"values trimmed":              mk("GET", "http://h:1/", http.Header{"A": {"\t v \t"}, "B": {"  "}}),
		"repeated fields":             mk("GET", "http://h:1/", http.Header{"Via": {"1", "2", "3"}}),
		"non-canonical names as is":   mk("GET", "http://h:1/", http.Header{"x-lower": {"v"}}),
		"excluded fields":             mk("GET", "http://h:1/", http.Header{"Host": {"evil"}, "Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}),
		"empty path":                  mk("GET", "http://h:1", nil),
		"escaped path":                mk("GET", "http://h:1/a%2Fb/c%20d", nil),
		"IPv6 literal":                mk("GET", "http://[::1]:8080/", nil),
		"IPv6 zone":                   mk("GET", "http://[fe80::1%25eth0]:8080/", nil),
		"non-ASCII host":              mk("GET", "http://bücher.example:80/", nil),
		"default port":                mk("GET", "http://backend/", nil),
		"Host from the Host field":    func() *http.Request { r := mk("GET", "http://h:1/", nil); r.Host = "public.example:443"; return r }(),
		"invalid Host":                func() *http.Request { r := mk("GET", "http://h:1/", nil); r.Host = "a b"; return r }(),
		"length without a body":       func() *http.Request { r := mk("GET", "http://h:1/", nil); r.ContentLength = 3; return r }(),
		"transfer encoding declared": func() *http.Request {
			r := mk("GET", "http://h:1/", nil)
			r.TransferEncoding = []string{"chunked"}
			return r
		}(),
		"NoBody with a length": func() *http.Request {
			r := mk("OPTIONS", "http://h:1/", nil)
			r.Body = http.NoBody
			r.ContentLength = 7
			return r
		}(),
	}
	declined := map[string]bool{
		"IPv6 zone": true, "non-ASCII host": true, "invalid Host": true,
		"length without a body": true, "transfer encoding declared": true, "NoBody with a length": true,
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			mine, std, ok := heads(t, req)
			if ok == declined[name] {
				t.Fatalf("writeHead took it = %v, want %v", ok, !declined[name])
			}
			if ok && !slices.Equal(mine, std) {
				t.Errorf("writeHead:\n%s\nRequest.Write:\n%s", strings.Join(mine, "\n"), strings.Join(std, "\n"))
			}
		})
	}
}

func TestWriteHeadLeavesWatchedWritesToRequestWrite(t *testing.T) {
	for name, tr := range map[string]*httptrace.ClientTrace{
		"WroteHeaderField": {WroteHeaderField: func(string, []string) {}},
		"WroteHeaders":     {WroteHeaders: func() {}},
		"WroteRequest":     {WroteRequest: func(httptrace.WroteRequestInfo) {}},
	} {
		ctx := httptrace.WithClientTrace(context.Background(), tr)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://h:1/", nil)
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if writeHead(w, req) || w.Buffered() > 0 {
			t.Errorf("%s: writeHead took a request whose trace watches the writing", name)
		}
	}
	// The proxy's own trace (1xx responses only) does not stop it.
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: nil})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://h:1/", nil)
	if !writeHead(bufio.NewWriter(&bytes.Buffer{}), req) {
		t.Error("writeHead declined a request with a trace that does not watch the writing")
	}
}

// FuzzWriteHead checks writeHead against Request.Write for any fields
// that pass validHeaders, any path and any Host.
func FuzzWriteHead(f *testing.F) {
	f.Add("GET", "/a?b=c", "h:1", "X-Id", " v1 ", "User-Agent", "ua")
	f.Add("OPTIONS", "", "[::1]:80", "accept", "\t", "Content-Length", "3")
	f.Add("HEAD", "/%zz", "a b", "Via", "x\x01y", "Host", "evil")
	f.Fuzz(func(t *testing.T, method, path, host, k1, v1, k2, v2 string) {
		switch method {
		case "GET", "HEAD", "OPTIONS":
		default:
			return // Takes sends nothing else here
		}
		req, err := http.NewRequest(method, "http://backend:80/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Path, req.URL.RawPath = path, ""
		req.Host = host
		req.Header = http.Header{k1: {v1}}
		req.Header[k2] = append(req.Header[k2], v2)
		if validHeaders(req.Header) != nil {
			return
		}
		mine, std, ok := heads(t, req)
		if ok && !slices.Equal(mine, std) {
			t.Errorf("writeHead:\n%q\nRequest.Write:\n%q", mine, std)
		}
	})
}

// upstreamHeader is what a gateway sends upstream with every request:
// forwarding, id, trace and identity fields, a bearer token.
func upstreamHeader() http.Header {
	return http.Header{
		"Accept": {"*/*"}, "Authorization": {"Bearer " + strings.Repeat("x", 150)},
		"Traceparent":   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"X-Auth-Method": {"jwt"}, "X-Auth-Subject": {"u1"}, "X-User-Id": {"u1"},
		"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Host": {"api.example.com"},
		"X-Forwarded-Proto": {"http"}, "X-Real-Ip": {"127.0.0.1"},
		"X-Request-Id": {"4ec1f5c0-51d3-4f31-9c0a-8c2e1b1f3a11"}, "User-Agent": {"wrk"},
	}
}

func BenchmarkWriteHead(b *testing.B) {
	req, _ := http.NewRequest("GET", "http://10.0.0.7:8080/api/v1/records/abc", nil)
	req.Header = upstreamHeader()
	w := bufio.NewWriterSize(discard{}, 4096)
	for _, bc := range []struct {
		name  string
		write func()
	}{
		{"writeHead", func() { writeHead(w, req) }},
		{"Request.Write", func() { req.Write(w) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.write()
				w.Flush()
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkValidHeaders(b *testing.B) {
	h := upstreamHeader()
	b.ReportAllocs()
	for b.Loop() {
		if validHeaders(h) != nil {
			b.Fatal("invalid")
		}
	}
}

// FuzzValidValue checks the word-at-a-time test against the plain one.
func FuzzValidValue(f *testing.F) {
	for _, s := range []string{"", "abc", "Bearer abcdefghijklmnop", "a\tb\tc\td\te", "abcdefg\x7f", "abcdefgh\x00", "\x80\x81\xff\xfe\x9f\xa0\x7e\x20zz", "\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := validValue(v), validBytes(v); got != want {
			t.Errorf("validValue(%q) = %v, want %v", v, got, want)
		}
	})
}
