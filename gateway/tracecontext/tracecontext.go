// Package tracecontext propagates W3C Trace Context
// (https://www.w3.org/TR/trace-context/) through the gateway.
//
// [Start] reads the traceparent and tracestate headers of an inbound request
// and either continues the caller's trace (same trace id, the caller's span
// as our parent, a fresh span id for the gateway) or, when the header is
// absent or malformed, starts a new sampled trace. [Context.AppendTraceparent]
// writes the header for the upstream request.
//
// The package depends on the standard library only. Span export is a hook:
// an embedder plugs an OpenTelemetry (or any other) exporter in through the
// one-method [Exporter] interface, so the gateway never imports a tracing SDK.
//
// Parsing and starting a trace do not allocate; the only allocation is
// combining several tracestate header lines into one string.
package tracecontext

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Trace flags defined by the specification. Other bits are reserved and are
// cleared when a trace is continued, as the specification requires.
const (
	// FlagSampled means the caller may have recorded its span.
	FlagSampled byte = 0x01
	// FlagRandom (Trace Context Level 2) means the trace id's rightmost
	// 7 bytes are random.
	FlagRandom byte = 0x02
)

// Header names in canonical form, so lookups in an [http.Header] need no
// canonicalisation (which would allocate).
const (
	TraceparentHeader = "Traceparent"
	TracestateHeader  = "Tracestate"
)

// Limits from the specification for the tracestate header; a header beyond
// them is dropped rather than truncated.
const (
	maxStateMembers = 32
	maxStateLen     = 512
)

// traceparentLen is the length of a version 00 traceparent value.
const traceparentLen = 55

// TraceID identifies a whole trace. The all-zero value is invalid.
type TraceID [16]byte

// SpanID identifies one span of a trace. The all-zero value is invalid.
type SpanID [8]byte

// IsZero reports whether t is the invalid all-zero id.
func (t TraceID) IsZero() bool { return t == TraceID{} }

// String returns t as 32 lowercase hex digits.
func (t TraceID) String() string { return hex.EncodeToString(t[:]) }

// AppendHex appends t as 32 lowercase hex digits to b.
func (t TraceID) AppendHex(b []byte) []byte { return hex.AppendEncode(b, t[:]) }

// IsZero reports whether s is the invalid all-zero id.
func (s SpanID) IsZero() bool { return s == SpanID{} }

// String returns s as 16 lowercase hex digits.
func (s SpanID) String() string { return hex.EncodeToString(s[:]) }

// AppendHex appends s as 16 lowercase hex digits to b.
func (s SpanID) AppendHex(b []byte) []byte { return hex.AppendEncode(b, s[:]) }

// Context is the trace context of one request as seen by the gateway.
//
// A Context is a plain value: copying it is safe, and its methods may be
// called concurrently.
type Context struct {
	// TraceID identifies the trace the request belongs to.
	TraceID TraceID
	// ParentID is the caller's span, zero when the gateway started the trace.
	// Parse stores the header's parent-id field here.
	ParentID SpanID
	// SpanID is the gateway's own span; it is sent upstream as parent-id.
	SpanID SpanID
	// Flags are the trace flags; see FlagSampled.
	Flags byte
	// State is the tracestate header, passed through verbatim when valid and
	// empty otherwise.
	State string
}

// IsValid reports whether c has a trace id and a span id, i.e. whether it
// can be sent upstream.
func (c Context) IsValid() bool { return !c.TraceID.IsZero() && !c.SpanID.IsZero() }

// Sampled reports whether the sampled flag is set.
func (c Context) Sampled() bool { return c.Flags&FlagSampled != 0 }

// Traceparent returns the version 00 traceparent header value that carries c
// upstream: "00-<trace-id>-<span-id>-<flags>", with c.SpanID as parent-id.
func (c Context) Traceparent() string {
	var b [traceparentLen]byte
	return string(c.AppendTraceparent(b[:0]))
}

// AppendTraceparent appends the value [Context.Traceparent] returns to b. It
// does not allocate when b has 55 bytes of spare capacity.
func (c Context) AppendTraceparent(b []byte) []byte {
	b = append(b, "00-"...)
	b = c.TraceID.AppendHex(b)
	b = append(b, '-')
	b = c.SpanID.AppendHex(b)
	b = append(b, '-')
	return append(b, hexDigits[c.Flags>>4], hexDigits[c.Flags&0xf])
}

// Inject sets the traceparent and tracestate headers of an outbound request
// from c, replacing any already present. An empty State removes tracestate,
// so a state the gateway dropped is not forwarded.
func (c Context) Inject(h http.Header) {
	h[TraceparentHeader] = []string{c.Traceparent()}
	if c.State == "" {
		delete(h, TracestateHeader)
		return
	}
	h[TracestateHeader] = []string{c.State}
}

// Child returns the context of a new span under c: same trace, flags and
// state, c.SpanID as parent and a fresh span id. The gateway uses it for
// each upstream attempt when it records attempts as separate spans.
func (c Context) Child() Context {
	c.ParentID = c.SpanID
	c.SpanID = NewSpanID()
	return c
}

const hexDigits = "0123456789abcdef"

// unhex maps a lowercase hex digit to its value and every other byte to
// 0xff; the specification forbids uppercase hex.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < 16; i++ {
		t[hexDigits[i]] = byte(i)
	}
	return t
}()

// decodeHex decodes the lowercase hex string s into dst (len(s) is
// 2*len(dst)) and reports whether every digit was valid.
func decodeHex(dst []byte, s string) bool {
	var bad byte
	for i := range dst {
		hi, lo := unhex[s[2*i]], unhex[s[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0xf
	}
	// A valid digit is < 16, so any 0xff marker shows in the high bits.
	return bad&0xf0 == 0
}

// Parse parses a traceparent header value. It returns the trace id, the
// header's parent-id (in ParentID) and flags; SpanID and State are zero.
//
// Version 00 must be exactly "00-<32 hex>-<16 hex>-<2 hex>". A higher
// version is read the same way as long as the first four fields are well
// formed and are followed by the end of the value or a dash; anything after
// is ignored, as the specification's forward-compatibility rules say.
// Version ff, all-zero ids, wrong lengths and uppercase or non-hex digits
// are rejected.
func Parse(traceparent string) (tp Context, ok bool) {
	s := traceparent
	if len(s) < traceparentLen || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return Context{}, false
	}
	var version [1]byte
	if !decodeHex(version[:], s[0:2]) || version[0] == 0xff {
		return Context{}, false
	}
	if len(s) > traceparentLen && (version[0] == 0 || s[traceparentLen] != '-') {
		return Context{}, false
	}
	var flags [1]byte
	if !decodeHex(tp.TraceID[:], s[3:35]) || !decodeHex(tp.ParentID[:], s[36:52]) ||
		!decodeHex(flags[:], s[53:55]) {
		return Context{}, false
	}
	if tp.TraceID.IsZero() || tp.ParentID.IsZero() {
		return Context{}, false
	}
	tp.Flags = flags[0]
	return tp, true
}

// Start returns the trace context for an inbound request with headers h.
//
// With exactly one valid traceparent header it continues that trace: same
// trace id, ParentID set to the caller's span, a new random SpanID, the
// sampled and random flags kept (reserved flags cleared) and a valid
// tracestate passed through. Otherwise (absent, repeated or malformed
// traceparent) it starts a new trace as [New] does and ignores tracestate,
// since the specification forbids keeping state for a trace it did not
// parse.
//
// h must use canonical header keys, as net/http's server produces. Start does
// not allocate unless tracestate spans several header lines.
func Start(h http.Header) Context {
	if v := h[TraceparentHeader]; len(v) == 1 {
		if c, ok := Parse(v[0]); ok {
			c.SpanID = NewSpanID()
			c.Flags &= FlagSampled | FlagRandom
			c.State = tracestate(h[TracestateHeader])
			return c
		}
	}
	return New()
}

// New starts a new trace: random trace and span ids, no parent, and the
// sampled flag set so downstream services record it.
func New() Context {
	return Context{TraceID: NewTraceID(), SpanID: NewSpanID(), Flags: FlagSampled}
}

// NewTraceID returns a random non-zero trace id. It uses math/rand/v2's
// runtime source (ChaCha8 per thread): unpredictable enough for ids, lock-
// and syscall-free, which matters at one id per request.
func NewTraceID() TraceID {
	for {
		hi, lo := rand.Uint64(), rand.Uint64()
		if hi|lo == 0 {
			continue
		}
		var t TraceID
		putUint64(t[0:8], hi)
		putUint64(t[8:16], lo)
		return t
	}
}

// NewSpanID returns a random non-zero span id.
func NewSpanID() SpanID {
	for {
		v := rand.Uint64()
		if v == 0 {
			continue
		}
		var s SpanID
		putUint64(s[:], v)
		return s
	}
}

func putUint64(b []byte, v uint64) {
	_ = b[7]
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// tracestate returns the tracestate to propagate from the header lines
// values, or "" when it is absent or invalid. Several lines form one list,
// as RFC 9110 field combination says; only then is a string allocated.
func tracestate(values []string) string {
	var s string
	switch len(values) {
	case 0:
		return ""
	case 1:
		s = values[0]
	default:
		s = strings.Join(values, ",")
	}
	if !ValidTracestate(s) {
		return ""
	}
	return s
}

// ValidTracestate reports whether s is a tracestate value the gateway
// forwards: well-formed list members (key=value) with unique keys, at most
// 32 members and at most 512 bytes in total. Empty and blank members are
// allowed and not counted. The empty string is not forwarded.
func ValidTracestate(s string) bool {
	if s == "" || len(s) > maxStateLen {
		return false
	}
	var keys [maxStateMembers]string
	n := 0
	for rest := s; ; {
		member, tail, more := strings.Cut(rest, ",")
		member = trimOWS(member)
		if member != "" {
			key, value, found := strings.Cut(member, "=")
			if !found || !validStateKey(key) || !validStateValue(value) || n == maxStateMembers {
				return false
			}
			for _, k := range keys[:n] {
				if k == key {
					return false
				}
			}
			keys[n] = key
			n++
		}
		if !more {
			break
		}
		rest = tail
	}
	return n > 0
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// validStateKey checks simple-key (lcalpha 0*255 keychar) or
// multi-tenant-key (tenant-id "@" system-id).
func validStateKey(k string) bool {
	tenant, system, multi := strings.Cut(k, "@")
	if !multi {
		return len(k) <= 256 && k != "" && isLower(k[0]) && keyChars(k[1:])
	}
	// tenant-id = (lcalpha / DIGIT) 0*240 keychar; system-id = lcalpha 0*13 keychar.
	return tenant != "" && len(tenant) <= 241 && (isLower(tenant[0]) || isDigit(tenant[0])) &&
		keyChars(tenant[1:]) &&
		system != "" && len(system) <= 14 && isLower(system[0]) && keyChars(system[1:])
}

func keyChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLower(c) && !isDigit(c) && c != '_' && c != '-' && c != '*' && c != '/' {
			return false
		}
	}
	return true
}

// validStateValue checks value = 0*255(chr) nblk-chr, where chr is printable
// ASCII other than ',' and '=' and the last character is not a space.
func validStateValue(v string) bool {
	if v == "" || len(v) > 256 || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return true
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

type ctxKey struct{}

// NewContext returns a copy of parent carrying c.
func NewContext(parent context.Context, c Context) context.Context {
	return context.WithValue(parent, ctxKey{}, c)
}

// FromContext returns the trace context stored by [NewContext], if any.
func FromContext(ctx context.Context) (Context, bool) {
	c, ok := ctx.Value(ctxKey{}).(Context)
	return c, ok
}

// Attr is one span attribute.
type Attr struct {
	Key, Value string
}

// Span is the gateway's record of one request, handed to an [Exporter] when
// the request ends.
//
// A Span is not safe for concurrent mutation; the gateway fills it in on the
// request goroutine and passes it to the exporter once it is complete.
type Span struct {
	// Context identifies the span (SpanID), its parent and its trace.
	Context Context
	// Name is a low-cardinality name, e.g. the route name.
	Name string
	// Start and End bound the span.
	Start, End time.Time
	// Attributes are extra key/value pairs (method, upstream, ...).
	Attributes []Attr
	// Status is the HTTP status code sent to the client, 0 if none was sent
	// (for example when the client went away first). Exporters map it to
	// their own status model, e.g. 5xx as an error for a server span.
	Status int
}

// Duration returns End - Start.
func (s *Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// Clone returns a deep copy of s, for exporters that queue spans.
func (s *Span) Clone() *Span {
	c := *s
	c.Attributes = append([]Attr(nil), s.Attributes...)
	return &c
}

// Exporter receives finished spans; an OpenTelemetry bridge implements it
// in the embedding program, so this package needs no tracing SDK.
//
// ExportSpan is called once per request after the response is complete. It
// must not block (an exporter queues and sends in the background, dropping
// when full) and must be safe for concurrent use. s and s.Attributes belong
// to the caller and may be reused after ExportSpan returns: an exporter that
// keeps the span must copy it, e.g. with [Span.Clone].
type Exporter interface {
	ExportSpan(s *Span)
}

// ExporterFunc adapts a function to [Exporter].
type ExporterFunc func(s *Span)

// ExportSpan calls f(s).
func (f ExporterFunc) ExportSpan(s *Span) { f(s) }
