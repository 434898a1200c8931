package h1

import (
	"bytes"
	"context"
	"net/http"
	"strings"
)

// head is a request head the Server takes.
type head struct {
	method string // "GET" or "HEAD"
	target string // origin-form, as sent
	host   string
	header http.Header // without Host, as net/http's server leaves it
	close  bool        // Connection: close
}

// takesMethod reports whether b, the first bytes of a request, may still
// start a request the Server takes, so that anything else is handed over
// at its first bytes rather than after its whole head.
func takesMethod(b []byte) bool {
	return bytes.HasPrefix([]byte("GET /"), b[:min(len(b), 5)]) ||
		bytes.HasPrefix([]byte("HEAD /"), b[:min(len(b), 6)])
}

// headEnd returns the length of the head at the start of b, through its
// blank line; -1 when b holds no whole head yet, and -2 when a line ends
// in a bare LF, which the Server leaves to Std.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		j += i
		if j == 0 || b[j-1] != '\r' {
			return -2
		}
		if j >= 3 && b[j-2] == '\n' {
			return j + 1
		}
		i = j + 1
	}
}

// parseHead parses s, a whole request head through its blank line, as
// net/http's server reads it (http.ReadRequest and the server's own
// checks on Host and field names and values); ok is false for any head
// the Server does not take, including every one net/http would refuse.
// The names and values in the result are substrings of s.
func parseHead(s string) (h head, ok bool) {
	eol := strings.Index(s, "\r\n")
	line := s[:eol]
	switch {
	case strings.HasPrefix(line, "GET "):
		h.method, line = "GET", line[4:]
	case strings.HasPrefix(line, "HEAD "):
		h.method, line = "HEAD", line[5:]
	default:
		return head{}, false
	}
	target, ok := strings.CutSuffix(line, " HTTP/1.1")
	// Origin-form only: "//x" would read as an authority in url.Parse.
	if !ok || len(target) == 0 || target[0] != '/' || strings.HasPrefix(target, "//") {
		return head{}, false
	}
	for i := 0; i < len(target); i++ {
		// Printable ASCII only; '#' has no place in a request target.
		if b := target[i]; b <= ' ' || b >= 0x7f || b == '#' {
			return head{}, false
		}
	}
	h.target = target

	n := strings.Count(s[eol+2:], "\r\n") - 1 // fields, less the blank line
	h.header = make(http.Header, n)
	vals := make([]string, n)
	hosts := 0
	for i, off := 0, eol+2; i < n; i++ {
		e := off + strings.Index(s[off:], "\r\n")
		k, v, ok := field(s, off, e)
		if !ok {
			return head{}, false
		}
		off = e + 2
		switch k {
		case "Host":
			hosts++
			if hosts > 1 || !validHost(v) {
				return head{}, false
			}
			h.host = v
			continue
		case "Connection":
			switch {
			case asciiEqualFold(v, "close"):
				h.close = true
			case asciiEqualFold(v, "keep-alive"):
			default:
				return head{}, false
			}
		case "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings", "Pragma":
			// Body framing, a protocol switch, or (Pragma) a field
			// net/http rewrites into Cache-Control: Std's.
			return head{}, false
		}
		vals[i] = v
		if old, ok := h.header[k]; ok {
			h.header[k] = append(old, v)
		} else {
			h.header[k] = vals[i : i+1 : i+1]
		}
	}
	if hosts != 1 {
		return head{}, false
	}
	return h, true
}

// request is the request h reads as, with ctx; an error for a target
// that is not a valid URL.
func (h *head) request(ctx context.Context) (*http.Request, error) {
	// NewRequestWithContext parses the target with url.Parse, which for an
	// origin-form target without "#" gives what url.ParseRequestURI gives
	// (the fuzz test holds it to that), and sets the context without the
	// copy WithContext makes.
	req, err := http.NewRequestWithContext(ctx, h.method, h.target, nil)
	if err != nil {
		return nil, err
	}
	req.Header = h.header
	req.Host = h.host
	req.Close = h.close
	req.RequestURI = h.target
	req.Body = http.NoBody
	return req, nil
}

// asciiEqualFold is strings.EqualFold for ASCII only, as HTTP compares
// tokens: Unicode folding would read "clo\u017fe" (long s) as "close",
// which net/http does not.
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// validHost reports whether v is a Host value made only of the bytes
// net/http's server accepts and forwards unchanged.
func validHost(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !plainHostBytes[v[i]] {
			return false
		}
	}
	return true
}
