package transform

import "net/http"

// Middleware returns middleware applying t around a handler. The handler
// sees a copy of the request with the request transforms applied (the
// caller's request is not modified; RequestURI follows a changed path or
// query). Response header transforms are applied to the handler's headers
// when it sends them: on its first WriteHeader with a final status, Write
// or Flush, or when it returns without writing. Informational (1xx)
// responses other than 101 go out untransformed. If t is empty the handler
// is returned as it is.
func (t *Transform) Middleware(v Vars) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if t.Empty() {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out := r
			if !t.req.empty() {
				out = new(http.Request)
				*out = *r
				if r.URL != nil {
					u := *r.URL
					out.URL = &u
				}
				out.Header = r.Header.Clone()
				t.ApplyRequest(out, r, v)
				if r.RequestURI != "" && out.URL != nil && (t.req.path != nil || t.req.query != nil) {
					out.RequestURI = out.URL.RequestURI()
				}
			}
			if t.resp.empty() {
				next.ServeHTTP(w, out)
				return
			}
			rw := &responseWriter{ResponseWriter: w, t: t, in: r, v: v}
			next.ServeHTTP(rw, out)
			// A handler that wrote nothing gets an implicit 200 with its
			// header map once it returns: transform that too.
			rw.apply()
		})
	}
}

// responseWriter applies response transforms just before the header is
// sent. Like any ResponseWriter it is used by one goroutine at a time.
type responseWriter struct {
	http.ResponseWriter
	t    *Transform
	in   *http.Request
	v    Vars
	done bool
}

func (w *responseWriter) apply() {
	if !w.done {
		w.done = true
		w.t.ApplyResponse(w.ResponseWriter.Header(), w.in, w.v)
	}
}

func (w *responseWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.apply()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.apply()
	return w.ResponseWriter.Write(b)
}

// FlushError is found by http.ResponseController; without it a flush
// would reach the underlying writer through Unwrap and send the header
// untransformed.
func (w *responseWriter) FlushError() error {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the connection (hijack,
// deadlines).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
