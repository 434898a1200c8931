package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// response is the http.ResponseWriter of a request the Server serves. It
// frames the response as net/http's server does (see Server).
type response struct {
	c       *serverConn
	req     *http.Request
	header  http.Header
	status  int   // the final status; 0 until WriteHeader
	cl      int64 // the declared or computed Content-Length; -1 for none
	written int64 // body bytes the handler wrote
	pre     *[]byte
	bw      *bufio.Writer
	err     error    // the first write error; the connection is then closed
	num     [20]byte // formats lengths: a local array would escape through bufio

	cancel     context.CancelFunc // the request's; a write error ends it
	wantsClose bool               // the request said Connection: close
	early      []string           // declared trailers already set at WriteHeader

	badCL      bool // the handler's Content-Length gave no valid length (and is dropped)
	committed  bool // the head is written
	done       bool // the handler returned; the writer is gone
	chunked    bool
	closeAfter bool
}

var errAfterHandler = errors.New("h1: response used after its handler returned")

// holdMax is how much body is held back before the head goes out, so
// that a short body gets a Content-Length and a sniffed Content-Type;
// net/http's bufferBeforeChunkingSize.
const holdMax = 2048

var (
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	holdPool   = sync.Pool{New: func() any { b := make([]byte, 0, holdMax); return &b }}
)

func (w *response) Header() http.Header { return w.header }

func (w *response) writer() *bufio.Writer {
	if w.bw == nil {
		w.bw = writerPool.Get().(*bufio.Writer)
		w.bw.Reset(w.c.nc)
	}
	return w.bw
}

// WriteHeader writes an informational (1xx) response at once; a final
// status is recorded and written with the first body bytes, a flush or
// the end of the handler.
func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.status != 0 || w.done {
		w.c.s.logf("http: superfluous response.WriteHeader call with %d after %d", code, w.status)
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		bw := w.writer()
		writeStatus(bw, code)
		writeFields(bw, w.header, func(k string) bool { return k == "Content-Length" || k == "Transfer-Encoding" })
		bw.WriteString("\r\n")
		w.fail(bw.Flush())
		return
	}
	w.status = code
	w.cl = -1
	if vv, ok := w.header["Content-Length"]; ok {
		// A field that gives no valid length (empty, or not a number)
		// is not sent, and, as in net/http, whose copy of the header
		// still has it, no length is computed: the body is chunked.
		w.badCL = true
		if len(vv) > 0 && vv[0] != "" {
			n, err := strconv.ParseInt(vv[0], 10, 64)
			if err == nil && n >= 0 {
				w.cl, w.badCL = n, false
			} else {
				w.c.s.logf("http: invalid Content-Length of %q", vv[0])
				delete(w.header, "Content-Length")
			}
		}
	}
	// Trailers declared and already set are sent in the header too, as
	// net/http's copy of the header at this point has them; declared
	// ones set later are trailers only.
	if len(w.header["Trailer"]) > 0 {
		for _, k := range trailerNames(w.header) {
			if _, ok := w.header[k]; ok {
				w.early = append(w.early, k)
			}
		}
	}
}

// fail records the first write error and, as net/http does, ends the
// request's context: the client is gone.
func (w *response) fail(err error) {
	if err != nil && w.err == nil {
		w.err = err
		if w.cancel != nil {
			w.cancel()
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.done {
		return 0, errAfterHandler
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.cl != -1 && w.written > w.cl {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.committed {
		if w.pre != nil || w.cl == -1 || w.sniffs() {
			if w.pre == nil {
				w.pre = holdPool.Get().(*[]byte)
			}
			if len(*w.pre)+len(p) <= holdMax {
				*w.pre = append(*w.pre, p...)
				return len(p), nil
			}
		}
		w.commit(false, p)
	}
	w.body(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// sniffs reports whether the response's Content-Type is left to be
// sniffed from its first bytes.
func (w *response) sniffs() bool {
	_, typed := w.header["Content-Type"]
	return !typed && first(w.header["Content-Encoding"]) == "" && first(w.header["Transfer-Encoding"]) == ""
}

// body writes p as body bytes: framed when chunked, not at all for HEAD.
func (w *response) body(p []byte) {
	if len(p) == 0 || w.req.Method == http.MethodHead || w.err != nil {
		return
	}
	bw := w.bw
	if w.chunked {
		bw.Write(strconv.AppendUint(w.num[:0], uint64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.fail(err)
		return
	}
	_, err := bw.Write(p)
	w.fail(err)
}

// commit writes the head, as net/http's chunkWriter.writeHeader decides
// it, followed by any body held back. p is the body's first bytes (for
// sniffing); final says the handler is done and p (then the held-back
// bytes) is the whole body.
func (w *response) commit(final bool, p []byte) {
	w.committed = true
	var held []byte
	if w.pre != nil {
		held = *w.pre
		if !final && len(held) < 512 {
			p = append(held, p[:min(len(p), 512-len(held))]...)
		} else {
			p = held
		}
	}
	bw := w.writer()
	h := w.header
	code := w.status
	bodyOK := bodyAllowed(code)
	isHEAD := w.req.Method == http.MethodHead
	te := first(h["Transfer-Encoding"])
	hasTE := te != ""
	hasCL := w.cl != -1
	if hasCL && hasTE && te != "identity" {
		hasCL = false // Content-Length does not go with another coding
	}
	bodyless := isHEAD || !bodyOK
	identity := !bodyless && !hasCL && hasTE && te == "identity"
	stopping := w.c.s.closing.Load()
	w.closeAfter = w.wantsClose || first(h["Connection"]) == "close" || stopping || identity
	dropConn := w.closeAfter && (stopping || !hasToken(first(h["Connection"]), "close"))

	writeStatus(bw, code)
	trailers := len(h["Trailer"]) > 0
	var declared []string
	if trailers {
		declared = trailerNames(h)
	}
	writeFields(bw, h, func(k string) bool {
		switch k {
		case "Transfer-Encoding", "Content-Length":
			// Framing comes from what WriteHeader saw and what this
			// response does, never from the map as it is now: a length
			// changed after WriteHeader must not disagree with the body.
			return true
		case "Content-Type":
			return code == http.StatusNotModified
		case "Connection":
			return dropConn
		}
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
			return true
		}
		// A declared trailer set after WriteHeader is not a header
		// field: net/http copied the header before it was set.
		return slices.Contains(declared, k) && !slices.Contains(w.early, k)
	})
	if bodyOK && len(p) > 0 && w.sniffs() {
		writeField(bw, "Content-Type", http.DetectContentType(p))
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.Write(httpDate())
		bw.WriteString("\r\n")
	}
	if !hasCL && final && !w.badCL && !trailers && !hasTE && bodyOK && (!isHEAD || len(p) > 0) {
		hasCL = true
		w.cl = int64(len(p))
	} else if !hasCL {
		w.cl = -1
	}
	if hasCL && bodyOK {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(w.num[:0], w.cl, 10))
		bw.WriteString("\r\n")
	}
	if !bodyless && !hasCL && !identity && code != http.StatusNoContent {
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if dropConn {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.fail(err)
	if held != nil {
		w.body(held)
		*w.pre = held[:0]
		holdPool.Put(w.pre)
		w.pre = nil
	}
}

// Flush sends what was written so far; the response is chunked unless it
// declared its length.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush reporting the write error (http.ResponseController).
func (w *response) FlushError() error {
	if w.done {
		return errAfterHandler
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(false, nil)
	}
	if w.err == nil {
		w.fail(w.bw.Flush())
	}
	return w.err
}

// SetWriteDeadline and SetReadDeadline serve http.ResponseController.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.ownWD = true // cleared after the response, as net/http does
	return w.c.nc.SetWriteDeadline(t)
}
func (w *response) SetReadDeadline(t time.Time) error { return w.c.nc.SetReadDeadline(t) }

// finish ends the response once the handler returned and reports whether
// the connection may serve another request.
func (w *response) finish() bool {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true, nil)
	}
	if w.chunked && w.err == nil {
		w.bw.WriteString("0\r\n")
		w.writeTrailers()
		w.bw.WriteString("\r\n")
	}
	if w.cl != -1 && w.req.Method != http.MethodHead && bodyAllowed(w.status) && w.written != w.cl {
		w.closeAfter = true // the body broke its framing
	}
	if w.err == nil {
		w.fail(w.bw.Flush())
	}
	w.bw.Reset(nil)
	writerPool.Put(w.bw)
	w.bw = nil
	w.done = true
	return w.err == nil && !w.closeAfter
}

// writeTrailers writes the declared trailers and the TrailerPrefix ones.
func (w *response) writeTrailers() {
	h := w.header
	for k, vv := range h {
		if kk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validName(kk) {
			for _, v := range vv {
				writeField(w.bw, kk, cleanValue(v))
			}
		}
	}
	for _, k := range trailerNames(h) {
		for _, v := range h[k] {
			writeField(w.bw, k, cleanValue(v))
		}
	}
}

// trailerNames returns the trailers h declares, less those that may not
// be trailers.
func trailerNames(h http.Header) []string {
	var names []string
	for _, decl := range h["Trailer"] {
		for _, k := range strings.Split(decl, ",") {
			k = http.CanonicalHeaderKey(textproto.TrimString(k))
			if validName(k) && allowedTrailer(k) {
				names = append(names, k)
			}
		}
	}
	return names
}

// allowedTrailer reports whether k may be sent as a trailer
// (httpguts.ValidTrailerHeader).
func allowedTrailer(k string) bool {
	switch k {
	case "Authorization", "Cache-Control", "Connection", "Content-Encoding", "Content-Length",
		"Content-Range", "Content-Type", "Expect", "Host", "Keep-Alive", "Max-Forwards",
		"Pragma", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "Range",
		"Realm", "Te", "Trailer", "Transfer-Encoding", "Www-Authenticate":
		return false
	}
	return true
}

// bodyAllowed reports whether a response with status code may have a body.
func bodyAllowed(code int) bool {
	return !(code >= 100 && code <= 199 || code == http.StatusNoContent || code == http.StatusNotModified)
}

func first(vv []string) string {
	if len(vv) == 0 {
		return ""
	}
	return vv[0]
}

// hasToken reports whether the comma-separated list v holds token,
// case-insensitively.
func hasToken(v, token string) bool {
	for v != "" {
		var e string
		e, v, _ = strings.Cut(v, ",")
		if asciiEqualFold(textproto.TrimString(e), token) {
			return true
		}
	}
	return false
}

func writeStatus(bw *bufio.Writer, code int) {
	var b [3]byte
	b[0], b[1], b[2] = byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10)
	bw.WriteString("HTTP/1.1 ")
	bw.Write(b[:])
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(b[:])
	}
	bw.WriteString("\r\n")
}

// writeFields writes h's fields but those skip names, as net/http's
// Header.Write does (invalid names dropped, line breaks in values turned
// into spaces, values trimmed) but in the map's order.
func writeFields(bw *bufio.Writer, h http.Header, skip func(string) bool) {
	for k, vv := range h {
		if skip(k) || !validName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, cleanValue(v))
		}
	}
}

func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !tokenBytes[k[i]] {
			return false
		}
	}
	return true
}

func cleanValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		b := []byte(v)
		for i, c := range b {
			if c == '\r' || c == '\n' {
				b[i] = ' '
			}
		}
		v = string(b)
	}
	return textproto.TrimString(v)
}

type dateLine struct {
	sec int64
	b   []byte
}

var lastDate atomic.Pointer[dateLine]

// httpDate is the Date value for now, formatted once a second.
func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := lastDate.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &dateLine{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	lastDate.Store(d)
	return d.b
}
