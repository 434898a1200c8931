package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pyairtable/api-gateway/gateway/tracecontext"
)

// NewAccessLog returns a logger for [Config.AccessLog] that writes one line
// per request to w, as JSON (format "json" or "") or as logfmt-style text
// ("text"), in the shape slog's JSON and text handlers give.
//
// The gateway recognises the logger and encodes request lines itself,
// straight into a pooled buffer: no attribute values, no record, no
// allocation per line. Any other record sent through the logger goes
// through slog's own handler for the format. Pair it with an
// [AsyncWriter] so that a slow log sink never slows requests.
func NewAccessLog(w io.Writer, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	h := &accessLogHandler{w: w, text: format == "text"}
	if h.text {
		h.Handler = slog.NewTextHandler(w, opts)
	} else {
		h.Handler = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

// accessLogHandler is slog's handler for the format plus the direct
// encoder the gateway uses for request lines.
type accessLogHandler struct {
	slog.Handler
	w    io.Writer
	text bool
	mu   sync.Mutex // serialises writes to a w that is not an AsyncWriter
}

// accessLine is what the gateway logs about one request.
type accessLine struct {
	time      time.Time
	level     slog.Level
	service   string
	instance  string
	route     string
	method    string
	path      string
	status    int
	duration  time.Duration
	bytes     int64
	clientIP  netip.Addr
	requestID string
	traceID   tracecontext.TraceID
	attempts  int
}

var accessBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// log encodes l and writes it as one line.
func (h *accessLogHandler) log(l *accessLine) {
	if !h.Enabled(context.Background(), l.level) {
		return
	}
	bp := accessBufs.Get().(*[]byte)
	b := (*bp)[:0]
	if h.text {
		b = l.appendText(b)
	} else {
		b = l.appendJSON(b)
	}
	if _, safe := h.w.(*AsyncWriter); safe {
		h.w.Write(b)
	} else {
		h.mu.Lock()
		h.w.Write(b)
		h.mu.Unlock()
	}
	if cap(b) <= 4<<10 {
		*bp = b
		accessBufs.Put(bp)
	}
}

// logTo sends l through any slog logger, as attributes.
func (l *accessLine) logTo(lg *slog.Logger) {
	lg.LogAttrs(context.Background(), l.level, "request",
		slog.String("service", l.service),
		slog.String("instance", l.instance),
		slog.String("route", l.route),
		slog.String("method", l.method),
		slog.String("path", l.path),
		slog.Int("status", l.status),
		slog.String("duration", l.duration.String()),
		slog.Float64("duration_ms", float64(l.duration.Microseconds())/1000),
		slog.Int64("bytes", l.bytes),
		slog.String("client_ip", string(l.clientIP.AppendTo(nil))), // "" when unknown, as in the direct encoder
		slog.String("request_id", l.requestID),
		slog.String("trace_id", l.traceID.String()),
		slog.Int("attempts", l.attempts),
	)
}

const hexDigits = "0123456789abcdef"

func (l *accessLine) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = l.time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"`...)
	b = append(b, l.level.String()...)
	b = append(b, `","msg":"request","service":`...)
	b = appendJSONString(b, l.service)
	b = append(b, `,"instance":`...)
	b = appendJSONString(b, l.instance)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, l.route)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, l.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, l.path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(l.status), 10)
	b = append(b, `,"duration":"`...)
	b = appendDuration(b, l.duration)
	b = append(b, `","duration_ms":`...)
	b = appendMillis(b, l.duration)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, l.bytes, 10)
	b = append(b, `,"client_ip":"`...)
	b = l.clientIP.AppendTo(b)
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, l.requestID)
	b = append(b, `,"trace_id":"`...)
	b = l.traceID.AppendHex(b)
	b = append(b, `","attempts":`...)
	b = strconv.AppendInt(b, int64(l.attempts), 10)
	return append(b, "}\n"...)
}

func (l *accessLine) appendText(b []byte) []byte {
	b = append(b, "time="...)
	b = l.time.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " level="...)
	b = append(b, l.level.String()...)
	b = append(b, " msg=request service="...)
	b = appendTextValue(b, l.service)
	b = append(b, " instance="...)
	b = appendTextValue(b, l.instance)
	b = append(b, " route="...)
	b = appendTextValue(b, l.route)
	b = append(b, " method="...)
	b = appendTextValue(b, l.method)
	b = append(b, " path="...)
	b = appendTextValue(b, l.path)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(l.status), 10)
	b = append(b, " duration="...)
	b = appendDuration(b, l.duration)
	b = append(b, " duration_ms="...)
	b = appendMillis(b, l.duration)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, l.bytes, 10)
	b = append(b, " client_ip="...)
	b = l.clientIP.AppendTo(b)
	b = append(b, " request_id="...)
	b = appendTextValue(b, l.requestID)
	b = append(b, " trace_id="...)
	b = l.traceID.AppendHex(b)
	b = append(b, " attempts="...)
	b = strconv.AppendInt(b, int64(l.attempts), 10)
	return append(b, '\n')
}

// appendMillis writes d in milliseconds with microsecond precision, as a
// JSON number.
func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// appendDuration writes d the way time.Duration.String does ("1.5ms",
// "2m3.004s"), without the allocation String makes.
func appendDuration(b []byte, d time.Duration) []byte {
	if d == 0 {
		return append(b, "0s"...)
	}
	if d < 0 {
		b = append(b, '-')
		if d == -1<<63 {
			return append(b, "2562047h47m16.854775808s"...)
		}
		d = -d
	}
	u := uint64(d)
	if u < uint64(time.Second) {
		switch {
		case u < uint64(time.Microsecond):
			b = strconv.AppendUint(b, u, 10)
			return append(b, "ns"...)
		case u < uint64(time.Millisecond):
			b = appendFrac(b, u, 3)
			return append(b, "µs"...)
		default:
			b = appendFrac(b, u, 6)
			return append(b, "ms"...)
		}
	}
	h, rest := u/uint64(time.Hour), u%uint64(time.Hour)
	m, s := rest/uint64(time.Minute), rest%uint64(time.Minute)
	if h > 0 {
		b = strconv.AppendUint(b, h, 10)
		b = append(b, 'h')
	}
	if h > 0 || m > 0 {
		b = strconv.AppendUint(b, m, 10)
		b = append(b, 'm')
	}
	b = appendFrac(b, s, 9)
	return append(b, 's')
}

// appendFrac writes v / 10^digits with the fraction's trailing zeros (and
// a bare point) dropped.
func appendFrac(b []byte, v uint64, digits int) []byte {
	unit := uint64(1)
	for range digits {
		unit *= 10
	}
	b = strconv.AppendUint(b, v/unit, 10)
	frac := v % unit
	if frac == 0 {
		return b
	}
	for frac%10 == 0 {
		frac /= 10
		digits--
	}
	b = append(b, '.')
	var d [9]byte
	for i := digits - 1; i >= 0; i-- {
		d[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(b, d[:digits]...)
}

// appendJSONString writes s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced, and <, >, & and the
// line separators escaped too, so that a problem body or a log line is
// safe to embed in HTML or JavaScript.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' && c != 0x7f {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendTextValue writes s bare when it is a plain token, else quoted, as
// slog's text handler does.
func appendTextValue(b []byte, s string) []byte {
	if s == "" {
		return append(b, `""`...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '=' || c == '"' || c >= utf8.RuneSelf {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(b, s...)
}
