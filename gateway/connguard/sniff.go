package connguard

import "sync/atomic"

// framingError is the concrete type of every verdict error. The values are
// package-level so a verdict costs no allocation.
type framingError struct{ msg string }

func (e *framingError) Error() string { return e.msg }
func (e *framingError) Unwrap() error { return ErrBadFraming }

func newFramingError(reason string) *framingError {
	return &framingError{msg: ErrBadFraming.Error() + ": " + reason}
}

var (
	errCLTE          = newFramingError("Content-Length with Transfer-Encoding")
	errTE10          = newFramingError("Transfer-Encoding in an HTTP/1.0 request")
	errMultiTE       = newFramingError("more than one Transfer-Encoding field")
	errTE            = newFramingError("Transfer-Encoding other than chunked")
	errMultiCL       = newFramingError("more than one Content-Length field")
	errCL            = newFramingError("invalid Content-Length")
	errObsFold       = newFramingError("obsolete line folding")
	errNameSpace     = newFramingError("whitespace in a field name")
	errName          = newFramingError("invalid field name")
	errValue         = newFramingError("invalid byte in a field value")
	errBareLF        = newFramingError("bare LF line ending")
	errCR            = newFramingError("CR not followed by LF")
	errRequestLine   = newFramingError("malformed request line")
	errVersion       = newFramingError("unsupported HTTP version")
	errHeadTooLarge  = newFramingError("request head too large")
	errChunkSize     = newFramingError("invalid chunk size line")
	errChunkLine     = newFramingError("chunk size line too long")
	errChunkCRLF     = newFramingError("chunk data not followed by CRLF")
	errChunkOverhead = newFramingError("too much chunked encoding overhead")
	errTrailerSize   = newFramingError("chunked trailer section too large")
	errNoVerdict     = newFramingError("no verdict for this request (sniffer and server out of step)")
	errHijacked      = newFramingError("connection was hijacked")

	// opaque ends sniffing without refusing anything: the connection now
	// speaks HTTP/2, whose framing is not ambiguous. Check turns it into nil.
	opaque = &framingError{msg: "connguard: connection switched to HTTP/2"}
)

// These mirror net/http so that the sniffer frames bodies exactly as the
// server does (net/http/internal/chunked.go and transfer.go).
const (
	maxChunkLine   = 4096     // bufio.Reader size: a chunk line incl. CRLF must fit
	maxTrailer     = 4096     // "\r\n\r\n" must end within one bufio buffer
	maxChunkExcess = 16 << 10 // tolerated non-data bytes in a chunked body
	maxInt63       = 1<<63 - 1
)

type state uint8

const (
	stStart        state = iota // before a request line
	stMethod                    // in the method
	stTarget                    // in the request target
	stVersion                   // in the HTTP version
	stReqLineLF                 // after the CR ending the request line
	stLineStart                 // at the start of a field line or of the blank line
	stName                      // in a field name
	stValue                     // in the value of a field that does not frame the body
	stCLValue                   // in a Content-Length value
	stTEValue                   // in a Transfer-Encoding value
	stFieldLF                   // after the CR ending a field line
	stSectionEndLF              // after the CR of the blank line ending a head or trailer
	stBodyCL                    // in a Content-Length body
	stChunkSize                 // in the hex digits of a chunk size line
	stChunkExt                  // in a chunk extension
	stChunkWS                   // in whitespace after the chunk size
	stChunkLF                   // after the CR ending a chunk size line
	stChunkData                 // in chunk data
	stChunkDataCR               // expecting the CR after chunk data
	stChunkDataLF               // expecting the LF after chunk data
	stDone                      // no longer following the stream
)

type traceEvent uint8

const (
	evHead       traceEvent = iota // a request head starts
	evHeadEnd                      // a head ended and its clean verdict was queued
	evHeadSkip                     // a head ended without a verdict ("OPTIONS *")
	evMessageEnd                   // the request's body (and trailer) ended
	evStop                         // sniffing stopped
)

// sniffer follows a stream of HTTP/1 requests one byte at a time, without
// buffering. The verdict queue is the clean count followed by the terminal
// verdict: after the first refusal nothing more is judged, so the queue
// never needs more than that.
type sniffer struct {
	// Shared with Check and Hijacked; everything else belongs to the
	// goroutine calling feed.
	clean atomic.Int64                 // clean verdicts not yet consumed
	term  atomic.Pointer[framingError] // set once, when sniffing stops

	maxHead      int64
	queueOptions bool // queue a verdict for "OPTIONS *"

	st       state
	off      int64 // stream offset of the next byte fed
	start    int64 // stream offset where the current head, trailer or chunk line began
	limit    int64 // stream offset the current head, trailer or chunk line must end before
	limitErr *framingError

	// The request head being read.
	method     [8]byte
	methodLen  int
	targetLen  int
	star       bool // the target starts with '*'
	version    [8]byte
	versionLen int
	http10     bool
	pri        bool // "PRI * HTTP/2.0"
	fields     int
	name       [17]byte // lower-cased; long enough for "transfer-encoding"
	nameLen    int
	hasCL      bool
	hasTE      bool
	vstate     uint8  // position inside a Content-Length or Transfer-Encoding value
	n          uint64 // Content-Length, bytes of body left, or chunk size
	digits     int    // hex digits of the chunk size
	inTrailer  bool
	excess     int64 // mirrors chunkedReader.excess

	trace func(ev traceEvent, off int64) // tests only
}

func (s *sniffer) init(maxHead int64, queueOptions bool) {
	s.maxHead = maxHead
	s.queueOptions = queueOptions
}

// pop consumes the verdict of the next request.
func (s *sniffer) pop() error {
	for {
		n := s.clean.Load()
		if n <= 0 {
			break
		}
		if s.clean.CompareAndSwap(n, n-1) {
			return nil
		}
	}
	switch t := s.term.Load(); t {
	case nil:
		return errNoVerdict
	case opaque:
		return nil
	default:
		return t
	}
}

// stop ends sniffing with err unless it has already ended. It only touches
// the atomic verdict, so any goroutine may call it.
func (s *sniffer) stop(err *framingError) {
	s.term.CompareAndSwap(nil, err)
}

// fail is stop for the feeding goroutine, at stream offset off.
func (s *sniffer) fail(off int64, err *framingError) {
	s.st = stDone
	s.stop(err)
	if s.trace != nil {
		s.trace(evStop, off)
	}
}

// feed advances the state machine over p, the next bytes of the stream.
func (s *sniffer) feed(p []byte) {
	base := s.off
	s.off += int64(len(p))
	i := 0
loop:
	for i < len(p) {
		pos := base + int64(i)

		// States whose length is not bounded by s.limit.
		switch s.st {
		case stDone:
			return
		case stStart:
			if !tchar[p[i]] {
				s.fail(pos, errRequestLine)
				return
			}
			s.beginHead(pos)
			continue
		case stBodyCL:
			k := min(s.n, uint64(len(p)-i))
			i += int(k)
			s.n -= k
			if s.n == 0 {
				s.endMessage(base + int64(i))
			}
			continue
		case stChunkData:
			k := min(s.n, uint64(len(p)-i))
			i += int(k)
			s.n -= k
			if s.n == 0 {
				s.st = stChunkDataCR
			}
			continue
		case stChunkDataCR:
			if p[i] != '\r' {
				s.fail(pos, errChunkCRLF)
				return
			}
			i++
			s.st = stChunkDataLF
			continue
		case stChunkDataLF:
			if p[i] != '\n' {
				s.fail(pos, errChunkCRLF)
				return
			}
			i++
			s.beginChunkLine(pos + 1)
			continue
		}

		// The rest are inside a head, a trailer or a chunk size line, all
		// of which must end before s.limit. Scanning stops at the limit, so
		// the verdict does not depend on how the stream was split.
		end := len(p)
		if rem := s.limit - pos; rem < int64(end-i) {
			end = i + int(max(rem, 0))
		}
		if i >= end {
			s.fail(pos, s.limitErr)
			return
		}

		switch s.st {
		case stMethod:
			j := i
			for j < end && tchar[p[j]] {
				if s.methodLen < len(s.method) {
					s.method[s.methodLen] = p[j]
				}
				s.methodLen++
				j++
			}
			i = j
			if i == end {
				continue
			}
			if p[i] != ' ' {
				s.fail(base+int64(i), errRequestLine)
				return
			}
			i++
			s.st = stTarget

		case stTarget:
			j := i
			for j < end && targetByte[p[j]] {
				j++
			}
			if j > i {
				if s.targetLen == 0 {
					s.star = p[i] == '*'
				}
				s.targetLen += j - i
			}
			i = j
			if i == end {
				continue
			}
			if p[i] != ' ' || s.targetLen == 0 {
				s.fail(base+int64(i), errRequestLine)
				return
			}
			i++
			s.st = stVersion

		case stVersion:
			j := i
			for j < end && targetByte[p[j]] {
				if s.versionLen < len(s.version) {
					s.version[s.versionLen] = p[j]
				}
				s.versionLen++
				j++
			}
			i = j
			if i == end {
				continue
			}
			c := p[i]
			switch {
			case c == '\r':
				s.st = stReqLineLF
			case c == '\n':
				s.fail(base+int64(i), errBareLF)
				return
			default:
				s.fail(base+int64(i), errRequestLine)
				return
			}
			i++

		case stReqLineLF:
			if p[i] != '\n' {
				s.fail(pos, errCR)
				return
			}
			i++
			if err := s.endRequestLine(); err != nil {
				s.fail(pos, err)
				return
			}
			s.st = stLineStart

		case stLineStart:
			c := p[i]
			switch {
			case c == '\r':
				s.st = stSectionEndLF
			case tchar[c]:
				s.nameLen = 0
				s.addName(c)
				s.st = stName
			case c == ' ' || c == '\t':
				s.fail(pos, errObsFold)
				return
			case c == '\n':
				s.fail(pos, errBareLF)
				return
			default:
				s.fail(pos, errName)
				return
			}
			i++

		case stName:
			j := i
			for j < end && tchar[p[j]] {
				s.addName(p[j])
				j++
			}
			i = j
			if i == end {
				continue
			}
			switch p[i] {
			case ':':
				if err := s.beginValue(); err != nil {
					s.fail(base+int64(i), err)
					return
				}
			case ' ', '\t':
				s.fail(base+int64(i), errNameSpace)
				return
			default:
				s.fail(base+int64(i), errName)
				return
			}
			i++

		case stValue:
			j := i
			for j < end && valueByte[p[j]] {
				j++
			}
			i = j
			if i == end {
				continue
			}
			if err := s.endValue(p[i]); err != nil {
				s.fail(base+int64(i), err)
				return
			}
			i++

		case stCLValue:
			for ; i < end; i++ {
				c := p[i]
				switch {
				case '0' <= c && c <= '9':
					d := uint64(c - '0')
					if s.vstate == 2 || s.n > (maxInt63-d)/10 {
						s.fail(base+int64(i), errCL)
						return
					}
					s.vstate = 1
					s.n = s.n*10 + d
				case c == ' ' || c == '\t':
					if s.vstate == 1 {
						s.vstate = 2
					}
				default:
					if s.vstate == 0 && c == '\r' {
						s.fail(base+int64(i), errCL) // empty
						return
					}
					if err := s.endValue(c); err != nil {
						if err == errValue {
							err = errCL
						}
						s.fail(base+int64(i), err)
						return
					}
					i++
					continue loop
				}
			}

		case stTEValue:
			// vstate: 0..7 = letters of "chunked" matched, 8 = after it.
			for ; i < end; i++ {
				c := p[i]
				switch {
				case s.vstate < 7 && c|0x20 == "chunked"[s.vstate]:
					s.vstate++
				case c == ' ' || c == '\t':
					switch s.vstate {
					case 0, 8:
					case 7:
						s.vstate = 8
					default:
						s.fail(base+int64(i), errTE)
						return
					}
				default:
					if c == '\r' && s.vstate < 7 {
						s.fail(base+int64(i), errTE)
						return
					}
					if err := s.endValue(c); err != nil {
						if err == errValue {
							err = errTE
						}
						s.fail(base+int64(i), err)
						return
					}
					i++
					continue loop
				}
			}

		case stFieldLF:
			if p[i] != '\n' {
				s.fail(pos, errCR)
				return
			}
			i++
			s.st = stLineStart

		case stSectionEndLF:
			if p[i] != '\n' {
				s.fail(pos, errCR)
				return
			}
			i++
			if s.inTrailer {
				s.inTrailer = false
				s.endMessage(pos + 1)
			} else {
				s.endHead(pos + 1)
			}

		case stChunkSize:
			for ; i < end; i++ {
				c := p[i]
				if h := hexVal[c]; h != 0xff {
					if s.digits == 16 {
						s.fail(base+int64(i), errChunkSize)
						return
					}
					s.digits++
					s.n = s.n<<4 | uint64(h)
					continue
				}
				if s.digits == 0 {
					s.fail(base+int64(i), errChunkSize)
					return
				}
				switch c {
				case ';':
					s.st = stChunkExt
				case ' ', '\t':
					s.st = stChunkWS
				case '\r':
					s.st = stChunkLF
				case '\n':
					s.fail(base+int64(i), errBareLF)
					return
				default:
					s.fail(base+int64(i), errChunkSize)
					return
				}
				i++
				continue loop
			}

		case stChunkExt:
			// Go accepts any byte but CR and LF in an extension.
			j := i
			for j < end && p[j] != '\r' && p[j] != '\n' {
				j++
			}
			i = j
			if i == end {
				continue
			}
			if p[i] == '\n' {
				s.fail(base+int64(i), errBareLF)
				return
			}
			i++
			s.st = stChunkLF

		case stChunkWS:
			// Whitespace may only end the line: Go trims it before cutting
			// the extension, so "5 ;x" is an error there.
			switch p[i] {
			case ' ', '\t':
			case '\r':
				s.st = stChunkLF
			default:
				s.fail(pos, errChunkSize)
				return
			}
			i++

		case stChunkLF:
			if p[i] != '\n' {
				s.fail(pos, errCR)
				return
			}
			i++
			if err := s.endChunkLine(pos + 1); err != nil {
				s.fail(pos, err)
				return
			}
		}
	}
	// A head, trailer or chunk line still open at the limit will not end in
	// time: refuse now rather than wait for more bytes.
	if s.st != stDone && s.bounded() && s.off >= s.limit {
		s.fail(s.off, s.limitErr)
	}
}

// bounded reports whether the current state lies in a region limited by
// s.limit.
func (s *sniffer) bounded() bool {
	switch s.st {
	case stStart, stBodyCL, stChunkData, stChunkDataCR, stChunkDataLF, stDone:
		return false
	}
	return true
}

func (s *sniffer) beginHead(off int64) {
	s.st = stMethod
	s.start = off
	s.limit = off + s.maxHead
	s.limitErr = errHeadTooLarge
	s.methodLen = 0
	s.targetLen = 0
	s.star = false
	s.versionLen = 0
	s.http10 = false
	s.pri = false
	s.fields = 0
	s.hasCL = false
	s.hasTE = false
	s.n = 0
	s.inTrailer = false
	if s.trace != nil {
		s.trace(evHead, off)
	}
}

func (s *sniffer) endRequestLine() *framingError {
	v := s.version[:]
	if s.versionLen != len(v) {
		return errVersion
	}
	// net/http accepts HTTP/1.0 to HTTP/1.9; HTTP/1.1 rules apply from 1.1.
	if string(v[:7]) == "HTTP/1." && '0' <= v[7] && v[7] <= '9' {
		s.http10 = v[7] == '0'
		return nil
	}
	// The HTTP/2 connection preface starts like a request ("PRI *
	// HTTP/2.0", no fields) and net/http serves it as one.
	if string(v) == "HTTP/2.0" && s.methodIs("PRI") && s.star && s.targetLen == 1 {
		s.pri = true
		return nil
	}
	return errVersion
}

func (s *sniffer) methodIs(m string) bool {
	return s.methodLen == len(m) && string(s.method[:len(m)]) == m
}

func (s *sniffer) addName(c byte) {
	if s.nameLen < len(s.name) {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		s.name[s.nameLen] = c
	}
	s.nameLen++
}

// beginValue is called at the colon ending a field name.
func (s *sniffer) beginValue() *framingError {
	s.fields++
	s.st = stValue
	if s.inTrailer {
		return nil
	}
	switch {
	case s.nameLen == len("content-length") && string(s.name[:s.nameLen]) == "content-length":
		switch {
		case s.hasTE:
			return errCLTE
		case s.hasCL:
			// net/http merges identical duplicates; a sender that repeats
			// the field is probing, not framing.
			return errMultiCL
		}
		s.hasCL = true
		s.n = 0
		s.vstate = 0
		s.st = stCLValue
	case s.nameLen == len("transfer-encoding") && string(s.name[:s.nameLen]) == "transfer-encoding":
		switch {
		case s.http10:
			// net/http ignores it and frames by Content-Length; an
			// HTTP/1.1 peer would not.
			return errTE10
		case s.hasCL:
			return errCLTE
		case s.hasTE:
			return errMultiTE
		}
		s.hasTE = true
		s.vstate = 0
		s.st = stTEValue
	}
	return nil
}

// endValue handles c, the first byte that is not part of a field value.
func (s *sniffer) endValue(c byte) *framingError {
	switch c {
	case '\r':
		s.st = stFieldLF
		return nil
	case '\n':
		return errBareLF
	}
	return errValue
}

func (s *sniffer) endHead(off int64) {
	if s.pri && s.fields > 0 {
		// With fields it is not the HTTP/2 preface, and net/http would keep
		// the connection for more HTTP/1 requests. Nobody sends that.
		s.fail(off, errVersion)
		return
	}
	counted := s.queueOptions || !(s.methodIs("OPTIONS") && s.star && s.targetLen == 1)
	if counted {
		s.clean.Add(1)
	}
	if s.trace != nil {
		if counted {
			s.trace(evHeadEnd, off)
		} else {
			s.trace(evHeadSkip, off)
		}
	}
	switch {
	case s.pri:
		// net/http closes the connection after this request unless the
		// handler hijacks it to speak HTTP/2, or hands the connection to its
		// own HTTP/2 server (prior knowledge): no more HTTP/1 either way.
		s.st = stDone
		s.stop(opaque)
		if s.trace != nil {
			s.trace(evStop, off)
		}
	case s.hasTE:
		s.excess = 0
		s.beginChunkLine(off)
	case s.hasCL && s.n > 0:
		s.st = stBodyCL
	default:
		s.endMessage(off)
	}
}

func (s *sniffer) endMessage(off int64) {
	s.st = stStart
	if s.trace != nil {
		s.trace(evMessageEnd, off)
	}
}

func (s *sniffer) beginChunkLine(off int64) {
	s.st = stChunkSize
	s.start = off
	s.limit = off + maxChunkLine
	s.limitErr = errChunkLine
	s.n = 0
	s.digits = 0
}

// endChunkLine is called after the LF of a chunk size line, with the offset
// of the byte that follows it.
func (s *sniffer) endChunkLine(off int64) *framingError {
	// Same arithmetic as chunkedReader.beginChunk, wrap-around included.
	lineLen := off - 2 - s.start
	s.excess += lineLen + 2
	s.excess -= 16 + (2 * int64(s.n))
	s.excess = max(s.excess, 0)
	if s.excess > maxChunkExcess {
		return errChunkOverhead
	}
	if s.n > 0 {
		s.st = stChunkData
		return nil
	}
	s.inTrailer = true
	s.st = stLineStart
	s.start = off
	s.limit = off + maxTrailer
	s.limitErr = errTrailerSize
	return nil
}

// Byte classes, as in RFC 9110 and net/textproto.
var (
	tchar      = byteClass(func(c byte) bool { return isAlnum(c) || c < 0x80 && contains("!#$%&'*+-.^_`|~", c) })
	valueByte  = byteClass(func(c byte) bool { return c == '\t' || c >= ' ' && c != 0x7f })
	targetByte = byteClass(func(c byte) bool { return c > ' ' && c != 0x7f })
	hexVal     = func() (t [256]uint8) {
		for i := range t {
			c := byte(i)
			switch {
			case '0' <= c && c <= '9':
				t[i] = c - '0'
			case 'a' <= c && c <= 'f':
				t[i] = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				t[i] = c - 'A' + 10
			default:
				t[i] = 0xff
			}
		}
		return t
	}()
)

func byteClass(f func(byte) bool) (t [256]bool) {
	for i := range t {
		t[i] = f(byte(i))
	}
	return t
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func contains(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}
