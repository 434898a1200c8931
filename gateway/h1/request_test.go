package h1

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseHead holds every request head the Server takes to net/http's
// reading of it: http.ReadRequest must accept it with the same method,
// URL, Host, fields and framing (no body), consume exactly the head, and
// pass the checks net/http's server adds (one valid Host, valid names and
// values). Whatever the Server does not take, Std reads.
func FuzzParseHead(f *testing.F) {
	for _, tc := range requestCases {
		f.Add([]byte(tc.raw))
	}
	f.Add([]byte("GET /x?y HTTP/1.1\r\nHost: a\r\nCookie: a=b; c=d\r\nAccept-Encoding: gzip\r\n\r\nGET"))
	f.Add([]byte("HEAD /%41?%zz HTTP/1.1\r\nHost: a:1\r\nConnection: CLOSE\r\n\r\n"))
	f.Fuzz(checkHead)
}

// FuzzParseHeadFields is FuzzParseHead with the framing held valid, so
// the fuzzer spends its time on targets, names and values.
func FuzzParseHeadFields(f *testing.F) {
	f.Add("/a/b?c=d", "X-Id", " abc ", "h:80")
	f.Add("/%41;x?%zz", "cookie", "a=b;\tc", "[::1]")
	f.Add("/", "Connection", "close", "h")
	f.Fuzz(func(t *testing.T, target, name, value, host string) {
		checkHead(t, []byte("GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n"+name+": "+value+"\r\n\r\n"))
	})
}

func checkHead(t *testing.T, in []byte) {
	if !takesMethod(in) {
		return
	}
	end := headEnd(in)
	if end < 0 {
		return
	}
	h, ok := parseHead(string(in[:end]))
	if !ok {
		return
	}
	mine, err := h.request(context.Background())
	if err != nil {
		return
	}
	br := bufio.NewReader(bytes.NewReader(in))
	want, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("taken, but ReadRequest fails: %v\n%q", err, in)
	}
	if consumed := len(in) - br.Buffered(); consumed != end {
		t.Fatalf("head of %d bytes, ReadRequest read %d\n%q", end, consumed, in)
	}
	// ReadRequest drops Host from the fields; the server sees them.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(in[:end])))
	tp.ReadLine()
	fields, err := tp.ReadMIMEHeader()
	if hosts := fields["Host"]; err != nil || len(hosts) != 1 || !netHTTPValidHost(hosts[0]) {
		t.Fatalf("taken, but net/http's server refuses Host %q (%v)\n%q", hosts, err, in)
	}
	for k, vv := range want.Header {
		for _, v := range vv {
			if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
				t.Fatalf("taken, but net/http's server refuses %s: %q", k, v)
			}
		}
	}
	if want.ContentLength != 0 || want.TransferEncoding != nil || want.Body != http.NoBody {
		t.Fatalf("taken, but ReadRequest sees a body (length %d, coding %q)\n%q",
			want.ContentLength, want.TransferEncoding, in)
	}
	got := []any{mine.Method, *mine.URL, mine.RequestURI, mine.Host, mine.Header, mine.Close, mine.Proto, mine.ProtoMajor, mine.ProtoMinor}
	exp := []any{want.Method, *want.URL, want.RequestURI, want.Host, want.Header, want.Close, want.Proto, want.ProtoMajor, want.ProtoMinor}
	for i := range got {
		if !reflect.DeepEqual(got[i], exp[i]) {
			t.Fatalf("field %d: got %#v, want %#v\n%q", i, got[i], exp[i], in)
		}
	}
}

// netHTTPValidHost is golang.org/x/net/http/httpguts.ValidHostHeader,
// which net/http's server applies.
func netHTTPValidHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}
