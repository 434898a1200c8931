package transform

import "strings"

// touches reports whether applying q to raw can change it, so an untouched
// query keeps its exact text at no cost.
func (q *queryOps) touches(raw string) bool {
	if len(q.set) > 0 {
		return true
	}
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		key, _, _ := strings.Cut(p, "=")
		if q.removed(key) {
			return true
		}
	}
	return false
}

func (q *queryOps) removed(rawKey string) bool {
	for _, name := range q.remove {
		if queryKeyEqual(rawKey, name) {
			return true
		}
	}
	return false
}

// build returns raw with the operations applied. Parameters not named are
// copied byte for byte, in order.
func (q *queryOps) build(raw string, e *env, s *sink) string {
	start := s.b.Len()
	var seen uint64
	first := true
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		key, _, _ := strings.Cut(p, "=")
		if q.removed(key) {
			continue
		}
		if k := q.setIndex(key); k >= 0 {
			// The first occurrence keeps its place; later ones go.
			if seen&(1<<k) == 0 {
				seen |= 1 << k
				first = q.writeSet(k, e, s, first)
			}
			continue
		}
		if !first {
			s.byte('&')
		}
		first = false
		s.str(p)
	}
	for k := range q.set {
		if seen&(1<<k) == 0 {
			first = q.writeSet(k, e, s, first)
		}
	}
	return s.since(start)
}

func (q *queryOps) setIndex(rawKey string) int {
	for k := range q.set {
		if queryKeyEqual(rawKey, q.set[k].name) {
			return k
		}
	}
	return -1
}

// writeSet writes set parameter k unless its value may not be emitted, in
// which case the parameter is left out. It returns the new value of first.
func (q *queryOps) writeSet(k int, e *env, s *sink, first bool) bool {
	qp := &q.set[k]
	if n, ok := e.size(&qp.val); !ok || n == 0 {
		return first
	}
	if !first {
		s.byte('&')
	}
	s.str(qp.esc)
	s.byte('=')
	if qp.val.parts == nil {
		s.queryEscape(qp.val.lit)
		return false
	}
	for _, p := range qp.val.parts {
		if p.slot == slotNone {
			s.queryEscape(p.lit)
		} else {
			v, _ := e.get(p.slot)
			s.queryEscape(v)
		}
	}
	return false
}

// queryEscape writes x escaped as url.QueryEscape would.
func (s *sink) queryEscape(x string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(x); i++ {
		c := x[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
			s.byte(c)
		case c == ' ':
			s.byte('+')
		case s.count:
			s.n += 3
		default:
			s.b.WriteByte('%')
			s.b.WriteByte(hex[c>>4])
			s.b.WriteByte(hex[c&15])
		}
	}
}

// queryKeyEqual compares a raw, possibly escaped, query key with a decoded
// name without allocating. A malformed escape never matches.
func queryKeyEqual(raw, name string) bool {
	if strings.IndexByte(raw, '%') < 0 && strings.IndexByte(raw, '+') < 0 {
		return raw == name
	}
	j := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return false
			}
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
		}
		if j >= len(name) || name[j] != c {
			return false
		}
		j++
	}
	return j == len(name)
}
