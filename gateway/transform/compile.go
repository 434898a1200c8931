package transform

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Limits that let a request's working state live on the stack.
const (
	maxHeaderVars = 16 // distinct ${header.X} names per Transform
	maxCaptures   = 16 // captures in a Match pattern
	maxQuerySet   = 64 // parameters in query.set
)

// Variable slots: 0 is "not a variable", 1..slotHeader-1 are the built-in
// variables and slotHeader+i is headerVars[i].
const (
	slotNone uint8 = iota
	slotRequestID
	slotClientIP
	slotSubject
	slotTenant
	slotRoute
	slotMethod
	slotHost
	slotPath
	slotHeader
	numSlots = int(slotHeader) + maxHeaderVars
)

var builtinVars = map[string]uint8{
	"request_id": slotRequestID,
	"client_ip":  slotClientIP,
	"subject":    slotSubject,
	"tenant":     slotTenant,
	"route":      slotRoute,
	"method":     slotMethod,
	"host":       slotHost,
	"path":       slotPath,
}

const knownVars = "request_id, client_ip, subject, tenant, route, method, host, path, header.<Name>"

// Headers owned by the HTTP machinery: changing them would desynchronise
// framing or routing from what net/http and the proxy believe.
var reservedHeaders = map[string]bool{
	"Host":              true,
	"Content-Length":    true,
	"Transfer-Encoding": true,
	"Connection":        true,
	"Keep-Alive":        true,
	"Proxy-Connection":  true,
	"Te":                true,
	"Trailer":           true,
	"Upgrade":           true,
}

// tmpl is a compiled value template.
type tmpl struct {
	lit   string // the whole value when parts is nil
	one   uint8  // the slot when the value is exactly one variable
	parts []part // literal and variable parts, in order; nil if constant
}

// part is a literal (slot == 0) or a variable.
type part struct {
	lit  string
	slot uint8
}

type headerOps struct {
	remove []string
	rename []renameOp
	set    []valueOp
	add    []valueOp
}

type renameOp struct{ from, to string }

type valueOp struct {
	name string
	val  tmpl
}

func (h *headerOps) empty() bool {
	return len(h.remove) == 0 && len(h.rename) == 0 && len(h.set) == 0 && len(h.add) == 0
}

// Compile validates s and compiles it. It reports every problem it finds,
// in a stable order; the Transform is nil if there is any.
func Compile(s Spec) (*Transform, []Problem) {
	c := &compiler{}
	t := &Transform{}
	t.req.headers = c.headers("request.headers", s.Request.Headers)
	t.req.path = c.path("request.path", s.Request.Path)
	t.req.query = c.query("request.query", s.Request.Query)
	t.resp = c.headers("response.headers", s.Response.Headers)
	if len(c.problems) > 0 {
		return nil, c.problems
	}
	t.headerVars = c.headerVars
	return t, nil
}

type compiler struct {
	problems   []Problem
	headerVars []string
}

func (c *compiler) problem(key, format string, args ...any) {
	c.problems = append(c.problems, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// headerName canonicalises and checks a configured header name, reporting
// under key. ok is false when it is unusable.
func (c *compiler) headerName(key, name string) (string, bool) {
	if !validToken(name) {
		c.problem(key, "%q is not a valid header name", name)
		return "", false
	}
	cn := http.CanonicalHeaderKey(name)
	if reservedHeaders[cn] {
		c.problem(key, "%s is managed by the HTTP server and proxy and cannot be transformed", cn)
		return "", false
	}
	return cn, true
}

func (c *compiler) headers(prefix string, ops HeaderOps) headerOps {
	var h headerOps

	removed := map[string]string{} // canonical → name as written
	for i, name := range ops.Remove {
		key := fmt.Sprintf("%s.remove[%d]", prefix, i)
		cn, ok := c.headerName(key, name)
		if !ok {
			continue
		}
		if prev, dup := removed[cn]; dup {
			c.problem(key, "duplicate of %q (header names are case-insensitive)", prev)
			continue
		}
		removed[cn] = name
		h.remove = append(h.remove, cn)
	}

	from := map[string]string{}
	to := map[string]string{}
	for _, name := range sortedKeys(ops.Rename) {
		key := prefix + ".rename." + name
		cf, ok1 := c.headerName(key, name)
		ct, ok2 := c.headerName(key, ops.Rename[name])
		if !ok1 || !ok2 {
			continue
		}
		switch {
		case from[cf] != "":
			c.problem(key, "duplicate of %q (header names are case-insensitive)", from[cf])
		case cf == ct:
			c.problem(key, "renames %s to itself", cf)
		case removed[cf] != "":
			c.problem(key, "%s is also in remove, which runs first, so it would never be renamed", cf)
		case to[ct] != "":
			c.problem(key, "%s is already the target of renaming %q", ct, to[ct])
		default:
			from[cf], to[ct] = name, name
			h.rename = append(h.rename, renameOp{from: cf, to: ct})
		}
	}
	// A chain (A→B, B→C) would depend on the order renames run in.
	for _, r := range h.rename {
		if src := from[r.to]; src != "" {
			c.problem(prefix+".rename."+from[r.from], "target %s is itself renamed (by %q); chains are ambiguous", r.to, src)
		}
	}

	h.set = c.valueOps(prefix+".set", ops.Set)
	h.add = c.valueOps(prefix+".add", ops.Add)
	return h
}

func (c *compiler) valueOps(prefix string, m map[string]string) []valueOp {
	var out []valueOp
	seen := map[string]string{}
	for _, name := range sortedKeys(m) {
		key := prefix + "." + name
		cn, ok := c.headerName(key, name)
		if !ok {
			continue
		}
		if prev, dup := seen[cn]; dup {
			c.problem(key, "duplicate of %q (header names are case-insensitive)", prev)
			continue
		}
		seen[cn] = name
		t, ok := c.template(key, m[name])
		if !ok {
			continue
		}
		out = append(out, valueOp{name: cn, val: t})
	}
	return out
}

// template parses a value with ${...} variables.
func (c *compiler) template(key, s string) (tmpl, bool) {
	if s == "" {
		c.problem(key, "empty value (use remove to delete)")
		return tmpl{}, false
	}
	var parts []part
	ok := true
	rest := s
	for rest != "" {
		i := strings.Index(rest, "${")
		if i < 0 {
			parts = append(parts, part{lit: rest})
			break
		}
		if i > 0 {
			parts = append(parts, part{lit: rest[:i]})
		}
		rest = rest[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			c.problem(key, "unterminated ${ in %q", s)
			return tmpl{}, false
		}
		slot, good := c.variable(key, rest[:j])
		ok = ok && good
		parts = append(parts, part{slot: slot})
		rest = rest[j+1:]
	}
	for _, p := range parts {
		if p.slot == slotNone && !validValue(p.lit) {
			c.problem(key, "value contains a control character")
			return tmpl{}, false
		}
	}
	if !ok {
		return tmpl{}, false
	}
	switch {
	case len(parts) == 1 && parts[0].slot == slotNone:
		return tmpl{lit: parts[0].lit}, true
	case len(parts) == 1:
		return tmpl{one: parts[0].slot, parts: parts}, true
	}
	return tmpl{parts: parts}, true
}

func (c *compiler) variable(key, name string) (uint8, bool) {
	if slot, ok := builtinVars[name]; ok {
		return slot, true
	}
	h, isHeader := strings.CutPrefix(name, "header.")
	if !isHeader {
		c.problem(key, "unknown variable ${%s} (known: %s)", name, knownVars)
		return 0, false
	}
	if !validToken(h) {
		c.problem(key, "${%s}: %q is not a valid header name", name, h)
		return 0, false
	}
	cn := http.CanonicalHeaderKey(h)
	if i := slices.Index(c.headerVars, cn); i >= 0 {
		return slotHeader + uint8(i), true
	}
	if len(c.headerVars) == maxHeaderVars {
		c.problem(key, "${%s}: more than %d distinct header variables", name, maxHeaderVars)
		return 0, false
	}
	c.headerVars = append(c.headerVars, cn)
	return slotHeader + uint8(len(c.headerVars)-1), true
}

// seg is one compiled path segment.
type seg struct {
	lit  string // decoded literal
	esc  string // lit percent-encoded for a path
	cap  int8   // capture index, or -1 for a literal
	rest bool   // captures the remainder of the path
}

type pathOps struct {
	strip   []seg // literal segments; nil if none
	add     string
	addEsc  string
	match   []seg
	replace []seg
}

// Path template kinds.
const (
	kindPrefix  = iota // literal segments only
	kindMatch          // defines captures
	kindReplace        // uses captures
)

// captures are the placeholders a Match defines.
type captures struct {
	idx  map[string]int8
	rest map[string]bool
}

func (c *compiler) path(prefix string, p PathOps) *pathOps {
	var ops pathOps
	if p.StripPrefix != "" {
		ops.strip = c.prefix(prefix+".strip_prefix", p.StripPrefix)
	}
	if p.AddPrefix != "" {
		for _, s := range c.prefix(prefix+".add_prefix", p.AddPrefix) {
			ops.add += "/" + s.lit
			ops.addEsc += "/" + s.esc
		}
	}
	switch {
	case p.Match != "" && p.Replace == "":
		c.problem(prefix+".match", "match needs a replace")
	case p.Match == "" && p.Replace != "":
		c.problem(prefix+".replace", "replace needs a match")
	case p.Match != "":
		caps := &captures{idx: map[string]int8{}, rest: map[string]bool{}}
		ops.match = c.pattern(prefix+".match", p.Match, kindMatch, caps)
		if ops.match != nil {
			ops.replace = c.pattern(prefix+".replace", p.Replace, kindReplace, caps)
			if ops.replace == nil {
				ops.match = nil
			}
		}
	}
	if ops.strip == nil && ops.add == "" && ops.match == nil {
		return nil
	}
	return &ops
}

// prefix compiles a strip or add prefix into literal segments, with any
// trailing slash dropped. It returns nil (after reporting) if unusable.
func (c *compiler) prefix(key, s string) []seg {
	if s == "/" {
		c.problem(key, `"/" has no effect`)
		return nil
	}
	return c.pattern(key, strings.TrimSuffix(s, "/"), kindPrefix, nil)
}

// pattern parses a path template into segments. It returns nil after
// reporting problems.
func (c *compiler) pattern(key, s string, kind int, caps *captures) []seg {
	if s == "" || s[0] != '/' {
		c.problem(key, "%q must start with /", s)
		return nil
	}
	raw := strings.Split(s[1:], "/")
	segs := make([]seg, 0, len(raw))
	ok := true
	for i, r := range raw {
		last := i == len(raw)-1
		if len(r) >= 2 && r[0] == '{' && r[len(r)-1] == '}' {
			inner := r[1 : len(r)-1]
			name, isRest := strings.CutSuffix(inner, "...")
			var msg string
			switch {
			case kind == kindPrefix:
				msg = "placeholders are only supported in match and replace"
			case !validName(name):
				msg = fmt.Sprintf("{%s}: a placeholder name is a letter or _ followed by letters, digits or _", inner)
			case isRest && !last:
				msg = fmt.Sprintf("{%s...} must be the last segment", name)
			case kind == kindMatch:
				if _, dup := caps.idx[name]; dup {
					msg = fmt.Sprintf("placeholder {%s} appears twice", name)
				} else if len(caps.idx) == maxCaptures {
					msg = fmt.Sprintf("more than %d placeholders", maxCaptures)
				} else {
					caps.idx[name] = int8(len(caps.idx))
					caps.rest[name] = isRest
				}
			default: // kindReplace
				if _, found := caps.idx[name]; !found {
					msg = fmt.Sprintf("{%s} is not a placeholder in match", name)
				} else if caps.rest[name] && !isRest {
					msg = fmt.Sprintf("{%s...} captures the rest of the path in match; write {%s...}", name, name)
				} else if !caps.rest[name] && isRest {
					msg = fmt.Sprintf("{%s} captures one segment in match; write {%s}", name, name)
				}
			}
			if msg != "" {
				c.problem(key, "%s", msg)
				ok = false
				continue
			}
			segs = append(segs, seg{cap: caps.idx[name], rest: isRest})
			continue
		}
		switch {
		case r == "" && !last:
			c.problem(key, "%q has an empty segment", s)
			ok = false
		case r == "." || r == "..":
			c.problem(key, "%q has a dot segment", s)
			ok = false
		case kind == kindPrefix && strings.ContainsAny(r, "{}"):
			c.problem(key, "segment %q: placeholders and variables are only supported in match and replace", r)
			ok = false
		case strings.ContainsAny(r, "{}"):
			c.problem(key, "segment %q: a placeholder must be a whole segment, {name} or {name...}", r)
			ok = false
		case strings.ContainsAny(r, "?#%"):
			c.problem(key, "segment %q: write paths decoded, without ?, # or %%-escapes", r)
			ok = false
		case !validValue(r) || strings.IndexByte(r, '\t') >= 0:
			c.problem(key, "segment %q contains a control character", r)
			ok = false
		default:
			segs = append(segs, seg{lit: r, esc: escapeSegment(r), cap: -1})
		}
	}
	if !ok {
		return nil
	}
	return segs
}

type queryOps struct {
	remove []string // decoded names
	set    []queryParam
}

type queryParam struct {
	name string // decoded
	esc  string // query-escaped
	val  tmpl
}

func (c *compiler) query(prefix string, q QueryOps) *queryOps {
	var ops queryOps
	removed := map[string]bool{}
	for i, name := range q.Remove {
		key := fmt.Sprintf("%s.remove[%d]", prefix, i)
		switch {
		case name == "":
			c.problem(key, "empty parameter name")
		case !validValue(name):
			c.problem(key, "parameter name contains a control character")
		case removed[name]:
			c.problem(key, "duplicate parameter %q", name)
		default:
			removed[name] = true
			ops.remove = append(ops.remove, name)
		}
	}
	for _, name := range sortedKeys(q.Set) {
		key := prefix + ".set." + name
		switch {
		case name == "":
			c.problem(key, "empty parameter name")
			continue
		case !validValue(name):
			c.problem(key, "parameter name contains a control character")
			continue
		case removed[name]:
			c.problem(key, "%q is also in remove; set already replaces every occurrence", name)
			continue
		case len(ops.set) == maxQuerySet:
			c.problem(key, "more than %d parameters to set", maxQuerySet)
			continue
		}
		t, ok := c.template(key, q.Set[name])
		if !ok {
			continue
		}
		ops.set = append(ops.set, queryParam{name: name, esc: url.QueryEscape(name), val: t})
	}
	if len(ops.remove) == 0 && len(ops.set) == 0 {
		return nil
	}
	return &ops
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// validToken reports whether s is an RFC 9110 token, the syntax of a
// header name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether s can be a header field value: no control
// characters other than horizontal tab. CR, LF and NUL are the dangerous
// ones; the rest would make net/http refuse the whole request.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// escapeSegment percent-encodes a decoded path segment (which holds no
// "/") as net/url encodes paths, so an unchanged literal keeps its usual
// spelling.
func escapeSegment(s string) string {
	return (&url.URL{Path: s}).EscapedPath()
}
