package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// FuzzReadHead holds readHead to http.ReadResponse: whatever response it
// takes, ReadResponse must read the same (status, fields, length,
// framing, body, and where the next response starts); whatever it
// declines, it must leave unread.
func FuzzReadHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Thu, 26 Nov 2026 05:59:06 GMT\r\nContent-Length: 27\r\n\r\n{\"items\":[1,2,3],\"ok\":true}",
		"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nx-id:  a  \r\nX-Id: b\r\n\r\nnopHTTP/1.1 200 OK\r\n",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: a\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: \x01\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\tok\r\nContent-Length: +1\r\n\r\nx",
		"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 00002\r\nPragma: no-cache\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\ncONTENT-lENGTH: 2\r\nx-A-b: 1\r\n\r\nhi",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req, _ := http.NewRequest(method, "http://backend/", nil)
		br1 := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		br1.Peek(1)
		resp1, ok := readHead(br1, req)
		if !ok {
			if rest, _ := io.ReadAll(br1); !bytes.Equal(rest, data) {
				t.Fatalf("declined but consumed %d bytes", len(data)-len(rest))
			}
			return
		}
		br2 := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		resp2, err := http.ReadResponse(br2, req)
		if err != nil {
			t.Fatalf("readHead took a response ReadResponse refuses: %v", err)
		}
		for _, c := range []struct {
			name     string
			got, std any
		}{
			{"Status", resp1.Status, resp2.Status},
			{"StatusCode", resp1.StatusCode, resp2.StatusCode},
			{"Proto", resp1.Proto, resp2.Proto},
			{"ProtoMajor", resp1.ProtoMajor, resp2.ProtoMajor},
			{"ProtoMinor", resp1.ProtoMinor, resp2.ProtoMinor},
			{"Header", resp1.Header, resp2.Header},
			{"ContentLength", resp1.ContentLength, resp2.ContentLength},
			{"TransferEncoding", len(resp1.TransferEncoding), len(resp2.TransferEncoding)},
			{"Close", resp1.Close, resp2.Close},
			{"Trailer", len(resp1.Trailer), len(resp2.Trailer)},
			{"Uncompressed", resp1.Uncompressed, resp2.Uncompressed},
			{"Request", resp1.Request, resp2.Request},
		} {
			if !reflect.DeepEqual(c.got, c.std) {
				t.Errorf("%s = %#v, ReadResponse: %#v", c.name, c.got, c.std)
			}
		}
		b1, err1 := io.ReadAll(resp1.Body)
		b2, err2 := io.ReadAll(resp2.Body)
		if !bytes.Equal(b1, b2) || err1 != err2 {
			t.Errorf("body %q, %v; ReadResponse: %q, %v", b1, err1, b2, err2)
		}
		r1, _ := io.ReadAll(br1)
		r2, _ := io.ReadAll(br2)
		if !bytes.Equal(r1, r2) {
			t.Errorf("next bytes %q; after ReadResponse: %q", r1, r2)
		}
	})
}

func TestReadHeadTakesTheUsualResponse(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://backend/", nil)
	resp := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
	br := bufio.NewReader(strings.NewReader(resp))
	br.Peek(1)
	if _, ok := readHead(br, req); !ok {
		t.Fatal("readHead declined an everyday response")
	}
}

func BenchmarkReadHead(b *testing.B) {
	const resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Thu, 26 Nov 2026 05:59:06 GMT\r\nContent-Length: 27\r\n\r\n{\"items\":[1,2,3],\"ok\":true}"
	req, _ := http.NewRequest("GET", "http://backend/", nil)
	sr := strings.NewReader(resp)
	br := bufio.NewReaderSize(sr, 4096)
	buf := make([]byte, 64)
	for _, bc := range []struct {
		name string
		read func() *http.Response
	}{
		{"readHead", func() *http.Response { br.Peek(1); r, _ := readHead(br, req); return r }},
		{"ReadResponse", func() *http.Response { r, _ := http.ReadResponse(br, req); return r }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(resp)
				br.Reset(sr)
				r := bc.read()
				io.ReadFull(r.Body, buf[:27])
				r.Body.Read(buf)
			}
		})
	}
}

// TestResponsesOfEveryShapeShareAConnection sends responses that readHead
// takes and ones it leaves to ReadResponse, in turn, down one keep-alive
// connection: each must be read whole and exactly, so the next one
// starts where it should.
func TestResponsesOfEveryShapeShareAConnection(t *testing.T) {
	checkGoroutines(t)
	responses := []struct{ raw, body string }{
		{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfirst", "first"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nchu\r\n4\r\nnked\r\n0\r\n\r\n", "chunked"},
		{"HTTP/1.1 201 Created\r\ncontent-length: 9\r\nx-lower: yes\r\n\r\nlowercase", "lowercase"},
		{"HTTP/1.1 204 No Content\r\n\r\n", ""},
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		{"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 6\r\n\r\npragma", "pragma"},
		{"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nlast", "last"},
	}
	addr, accepted := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for _, r := range responses {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, r.raw); err != nil {
				return
			}
		}
	})
	tr, _ := newTransport(t)
	for i, r := range responses {
		resp, body, err := get(t, tr, context.Background(), "GET", "http://"+addr+"/")
		if err != nil || body != r.body {
			t.Fatalf("response %d: %v %q, want %q", i, err, body, r.body)
		}
		if i == 2 && resp.Header.Get("X-Lower") != "yes" {
			t.Errorf("response %d: header %v", i, resp.Header)
		}
		if i == 5 && resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("response %d: Pragma without Cache-Control gets one, as ReadResponse does: %v", i, resp.Header)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}
