package h1

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
)

// writeHead writes req's request line and header section, as
// Request.Write would for the requests this Transport takes, with one
// difference: header fields go out in the map's order. Request.Write
// sorts them first, which for the dozen fields a gateway sends upstream
// (forwarding, request id, trace, identity) cost about a microsecond per
// request; the order of fields with different names carries no meaning
// (RFC 9110, section 5.3).
//
// It reports false, having written nothing, for a request it leaves to
// Request.Write: one whose trace watches the writing, whose Host needs
// cleaning (non-ASCII, an IPv6 zone) or is invalid, whose URL holds
// control bytes, or that declares a length, an encoding or trailers.
// Header fields must have passed validHeaders.
func writeHead(w *bufio.Writer, req *http.Request) bool {
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return false
	}
	if tr := httptrace.ContextClientTrace(req.Context()); tr != nil &&
		(tr.WroteHeaderField != nil || tr.WroteHeaders != nil || tr.WroteRequest != nil) {
		return false
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		if !plainHostBytes[host[i]] {
			return false
		}
	}
	uri := req.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if b := uri[i]; b < ' ' || b == 0x7f {
			return false
		}
	}

	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	// As Request.Write: a User-Agent field, even an empty one, replaces
	// the default; an empty one is not sent, one of only blanks is sent
	// empty.
	ua := "Go-http-client/1.1"
	if vv, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = vv[0]
		}
	}
	if ua != "" {
		writeField(w, "User-Agent", textproto.TrimString(ua))
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // written above, or not at all, as by Request.Write
		}
		for _, v := range vv {
			writeField(w, k, textproto.TrimString(v))
		}
	}
	w.WriteString("\r\n")
	return true
}

func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(v)
	w.WriteString("\r\n")
}

// plainHostBytes are the bytes of a Host value Request.Write sends
// unchanged: those of golang.org/x/net/http/httpguts.ValidHostHeader less
// '%', since an IPv6 zone is cut off first.
var plainHostBytes = func() (t [256]bool) {
	for b := range 256 {
		t[b] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
	}
	for _, b := range []byte("!$&'()*+,-.:;=[]_~") {
		t[b] = true
	}
	return t
}()
