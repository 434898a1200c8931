package connguard

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
)

// browserGET is a typical keep-alive request from a browser-like client.
const browserGET = "GET /api/v1/users/12345/profile?fields=name,email HTTP/1.1\r\n" +
	"Host: api.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: application/json, text/plain, */*\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=abcdef0123456789; theme=dark\r\n" +
	"\r\n"

// BenchmarkSniffCleanGET measures the sniffer on a stream of keep-alive
// GETs fed in 4 KiB reads, as http.Server reads them (so reads split
// requests). One op is a pass over 16 requests; ns/req is per request.
func BenchmarkSniffCleanGET(b *testing.B) {
	const reqs = 16
	stream := []byte(strings.Repeat(browserGET, reqs))
	var s sniffer
	s.init(DefaultMaxHeadBytes, false)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		feed4K(&s, stream)
	}
	if s.term.Load() != nil || s.st != stStart {
		b.Fatalf("sniffer out of step: state %d, term %v", s.st, s.term.Load())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*reqs), "ns/req")
}

func feed4K(s *sniffer, p []byte) {
	for len(p) > 0 {
		n := min(4096, len(p))
		s.feed(p[:n])
		p = p[n:]
	}
}

// BenchmarkSniffChunkedPOST measures a chunked upload with small chunks,
// the worst case for body skipping.
func BenchmarkSniffChunkedPOST(b *testing.B) {
	body := strings.Repeat("400\r\n"+strings.Repeat("x", 0x400)+"\r\n", 16) + "0\r\n\r\n"
	req := []byte("POST /upload HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
	var s sniffer
	s.init(DefaultMaxHeadBytes, false)
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		feed4K(&s, req)
	}
	if s.term.Load() != nil || s.st != stStart {
		b.Fatalf("sniffer out of step: state %d, term %v", s.st, s.term.Load())
	}
}

// BenchmarkCheck measures Check on a context shaped like the one a
// handler gets from http.Server.
func BenchmarkCheck(b *testing.B) {
	a, p := net.Pipe()
	defer a.Close()
	defer p.Close()
	c := &Conn{Conn: a, l: Listen(nil, Settings{})}
	c.s.init(DefaultMaxHeadBytes, false)
	ctx := context.WithValue(context.Background(), http.ServerContextKey, &http.Server{})
	ctx = ConnContext(ctx, c)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, a.LocalAddr())
	ctx, cancel := context.WithCancel(ctx) // the connection's
	defer cancel()
	ctx, cancel2 := context.WithCancel(ctx) // the request's
	defer cancel2()
	c.s.clean.Store(1 << 62)
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
