package transform

import (
	"net/http"
	"net/url"
	"strings"
)

// ApplyRequest applies the request transforms to out, the request to be
// sent: its headers, URL.Path and URL.RawPath (kept consistent, so
// percent-encoded characters stay encoded), and URL.RawQuery. Variables
// are read from in, the request as received, and are all resolved before
// out changes, so out and in may be the same request. In a ReverseProxy
// Rewrite hook, pass pr.Out and pr.In, after any path rewriting of the
// caller's own, since path operations work on out's current path. Path
// operations leave a path that does not start with "/" (such as "*")
// alone.
func (t *Transform) ApplyRequest(out, in *http.Request, v Vars) {
	if t == nil || t.req.empty() {
		return
	}
	rq := &t.req
	e := env{in: in, v: v, t: t}
	var pp pathPlan
	if rq.path != nil && out.URL != nil {
		rq.path.plan(out.URL, &pp)
	}
	query := rq.query != nil && out.URL != nil && rq.query.touches(out.URL.RawQuery)

	// First pass: resolve every variable and size the new strings, so
	// that they all fit one buffer.
	s := sink{count: true}
	rq.headers.plan(&e, &s)
	if pp.changed {
		rq.path.build(&pp, &s)
	}
	if query {
		rq.query.build(out.URL.RawQuery, &e, &s)
	}
	if s.n > 0 {
		s.b.Grow(s.n)
	}
	s.count = false

	if !rq.headers.empty() {
		if out.Header == nil {
			out.Header = make(http.Header)
		}
		rq.headers.apply(out.Header, &e, &s)
	}
	if pp.changed {
		setPath(out.URL, rq.path.build(&pp, &s), pp.esc)
	}
	if query {
		out.URL.RawQuery = rq.query.build(out.URL.RawQuery, &e, &s)
	}
}

// ApplyResponse applies the response header transforms to h, the
// backend's response headers (in a ReverseProxy ModifyResponse hook,
// resp.Header), before the gateway adds headers of its own. Variables are
// read from in, the request as received: ${header.X} names a request
// header. A nil h is left alone.
func (t *Transform) ApplyResponse(h http.Header, in *http.Request, v Vars) {
	if t == nil || t.resp.empty() || h == nil {
		return
	}
	e := env{in: in, v: v, t: t}
	s := sink{count: true}
	t.resp.plan(&e, &s)
	if s.n > 0 {
		s.b.Grow(s.n)
	}
	s.count = false
	t.resp.apply(h, &e, &s)
}

// env resolves the variables of one Apply call, each at most once.
type env struct {
	in   *http.Request
	v    Vars
	t    *Transform
	have uint32 // bit per slot: val holds it
	bad  uint32 // bit per slot: the value must not be emitted
	val  [numSlots]string
}

// get returns a variable's value and whether it may be emitted.
func (e *env) get(slot uint8) (string, bool) {
	bit := uint32(1) << slot
	if e.have&bit == 0 {
		s := e.lookup(slot)
		e.val[slot] = s
		e.have |= bit
		if !validValue(s) {
			e.bad |= bit
		}
	}
	return e.val[slot], e.bad&bit == 0
}

func (e *env) lookup(slot uint8) string {
	r := e.in
	if r == nil {
		return ""
	}
	switch {
	case slot >= slotHeader:
		// headerVars are canonical already; Header.Get would redo it.
		if vs := r.Header[e.t.headerVars[slot-slotHeader]]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	case slot == slotMethod:
		return r.Method
	case slot == slotHost:
		return r.Host
	case slot == slotPath:
		if r.URL == nil {
			return ""
		}
		return r.URL.Path
	case e.v == nil:
		return ""
	}
	switch slot {
	case slotRequestID:
		return e.v.RequestID(r)
	case slotClientIP:
		return e.v.ClientIP(r)
	case slotSubject:
		return e.v.Subject(r)
	case slotTenant:
		return e.v.Tenant(r)
	case slotRoute:
		return e.v.Route(r)
	}
	return ""
}

// size returns the length of t expanded, and false if a variable in it
// must not be emitted.
func (e *env) size(t *tmpl) (int, bool) {
	if t.parts == nil {
		return len(t.lit), true
	}
	n := 0
	for _, p := range t.parts {
		if p.slot == slotNone {
			n += len(p.lit)
			continue
		}
		v, ok := e.get(p.slot)
		if !ok {
			return 0, false
		}
		n += len(v)
	}
	return n, true
}

// value expands a header value. ok is false when nothing may be emitted:
// the value is empty or a variable in it holds a control character.
func (e *env) value(t *tmpl, s *sink) (v string, ok bool) {
	if t.parts == nil {
		return t.lit, true
	}
	if t.one != slotNone {
		v, ok = e.get(t.one)
		return v, ok && v != ""
	}
	n, ok := e.size(t)
	if !ok || n == 0 {
		return "", false
	}
	if s.count {
		s.n += n
		return "", true
	}
	start := s.b.Len()
	for _, p := range t.parts {
		if p.slot == slotNone {
			s.b.WriteString(p.lit)
		} else {
			v, _ := e.get(p.slot)
			s.b.WriteString(v)
		}
	}
	return s.since(start), true
}

// sink is the one buffer holding a call's new strings. A first pass with
// count set only adds up their lengths; the buffer is then grown once and
// the second pass writes. Strings handed out point into the buffer, whose
// written bytes never change: if it ever had to grow, earlier strings
// would keep the old array.
type sink struct {
	b     strings.Builder
	n     int
	count bool
}

func (s *sink) str(x string) {
	if s.count {
		s.n += len(x)
	} else {
		s.b.WriteString(x)
	}
}

func (s *sink) byte(c byte) {
	if s.count {
		s.n++
	} else {
		s.b.WriteByte(c)
	}
}

// since returns what was written from start on ("" when counting).
func (s *sink) since(start int) string {
	return s.b.String()[start:]
}

func (h *headerOps) plan(e *env, s *sink) {
	for i := range h.set {
		e.value(&h.set[i].val, s)
	}
	for i := range h.add {
		e.value(&h.add[i].val, s)
	}
}

func (h *headerOps) apply(hdr http.Header, e *env, s *sink) {
	for _, k := range h.remove {
		delete(hdr, k)
	}
	for _, r := range h.rename {
		if vs, ok := hdr[r.from]; ok {
			delete(hdr, r.from)
			hdr[r.to] = vs
		}
	}
	// One backing array for every new single-value slice; each slice is
	// capped so that appending to it copies instead of overwriting the
	// next header's value.
	var vals []string
	n := 0
	one := func(v string) []string {
		if vals == nil {
			vals = make([]string, len(h.set)+len(h.add))
		}
		vals[n] = v
		n++
		return vals[n-1 : n : n]
	}
	for i := range h.set {
		op := &h.set[i]
		v, ok := e.value(&op.val, s)
		if !ok {
			// Never leave the client's value where ours was meant to be.
			delete(hdr, op.name)
			continue
		}
		hdr[op.name] = one(v)
	}
	for i := range h.add {
		op := &h.add[i]
		v, ok := e.value(&op.val, s)
		if !ok {
			continue
		}
		if old := hdr[op.name]; len(old) > 0 {
			hdr[op.name] = append(old, v)
		} else {
			hdr[op.name] = one(v)
		}
	}
}

// pathPlan is what path matching found, kept between the two passes.
type pathPlan struct {
	p       string // the path after stripping: decoded, or escaped if esc
	esc     bool   // work on the escaped path because the URL has a RawPath
	bare    bool   // the strip consumed the whole path
	matched bool
	changed bool
	caps    [maxCaptures]span
}

type span struct{ lo, hi int }

func (o *pathOps) plan(u *url.URL, pp *pathPlan) {
	p := u.Path
	if u.RawPath != "" {
		// Encoded characters (such as %2F inside a segment) matter: work
		// on the escaped form so segment boundaries are the real ones.
		p = u.EscapedPath()
		pp.esc = true
	}
	if p == "" || p[0] != '/' {
		return
	}
	if o.strip != nil {
		if end, ok := matchSegs(p, pp.esc, o.strip, nil, true); ok {
			p = p[end:]
			pp.bare = p == ""
			pp.changed = true
		}
	}
	if o.match != nil {
		q := p
		if q == "" {
			q = "/"
		}
		if _, ok := matchSegs(q, pp.esc, o.match, &pp.caps, false); ok {
			p = q
			pp.matched = true
			pp.changed = true
		}
	}
	if o.add != "" {
		pp.changed = true
	}
	pp.p = p
}

// build returns the new path, escaped if pp.esc.
func (o *pathOps) build(pp *pathPlan, s *sink) string {
	add := o.add
	if pp.esc {
		add = o.addEsc
	}
	if !pp.matched && add == "" {
		// Only stripped: a substring of the old path.
		if pp.bare {
			return "/"
		}
		return pp.p
	}
	start := s.b.Len()
	s.str(add)
	switch {
	case pp.matched:
		for _, sg := range o.replace {
			s.byte('/')
			switch {
			case sg.cap >= 0:
				c := pp.caps[sg.cap]
				s.str(pp.p[c.lo:c.hi])
			case pp.esc:
				s.str(sg.esc)
			default:
				s.str(sg.lit)
			}
		}
	case !pp.bare:
		s.str(pp.p)
	}
	return s.since(start)
}

func setPath(u *url.URL, p string, esc bool) {
	if !esc {
		u.Path, u.RawPath = p, ""
		return
	}
	dec, err := url.PathUnescape(p)
	if err != nil {
		return // not reached: p is made of valid escaped parts
	}
	u.Path, u.RawPath = dec, p
}

// matchSegs matches p, which starts with "/", against segs, recording
// captures. With prefix set the match may end at a segment boundary before
// the end of p; end is where it ended. Segments are compared decoded, and
// captures refuse "." and ".." so a rewrite cannot turn into a traversal.
func matchSegs(p string, esc bool, segs []seg, caps *[maxCaptures]span, prefix bool) (end int, ok bool) {
	i := 0
	for _, sg := range segs {
		if i >= len(p) || p[i] != '/' {
			return 0, false
		}
		lo := i + 1
		if sg.rest {
			for r := p[lo:]; ; {
				s, more, found := strings.Cut(r, "/")
				if isDot(s, esc) {
					return 0, false
				}
				if !found {
					break
				}
				r = more
			}
			caps[sg.cap] = span{lo, len(p)}
			return len(p), true
		}
		hi := len(p)
		if j := strings.IndexByte(p[lo:], '/'); j >= 0 {
			hi = lo + j
		}
		s := p[lo:hi]
		if sg.cap >= 0 {
			if s == "" || isDot(s, esc) {
				return 0, false
			}
			caps[sg.cap] = span{lo, hi}
		} else if !segEqual(s, sg.lit, esc) {
			return 0, false
		}
		i = hi
	}
	if !prefix && i != len(p) {
		return 0, false
	}
	return i, true
}

func isDot(s string, esc bool) bool {
	return segEqual(s, ".", esc) || segEqual(s, "..", esc)
}

// segEqual compares a path segment with a decoded literal, decoding
// percent-escapes in s on the fly when esc is set.
func segEqual(s, lit string, esc bool) bool {
	if !esc || strings.IndexByte(s, '%') < 0 {
		return s == lit
	}
	j := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		if j >= len(lit) || lit[j] != c {
			return false
		}
		j++
	}
	return j == len(lit)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
