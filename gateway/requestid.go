package gateway

import (
	"context"
	"math/rand/v2"
	"unsafe"
)

// maxRequestIDLen bounds a client-supplied X-Request-ID; longer ones are
// replaced, so logs and backends never carry unbounded client input.
const maxRequestIDLen = 128

// validRequestID reports whether a client-supplied request id is a sane
// token: 1..128 characters of [A-Za-z0-9._:+=/-].
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '=' || c == '/':
		default:
			return false
		}
	}
	return true
}

// newRequestID writes a random UUIDv4 into b. math/rand/v2's global
// source is a per-thread ChaCha8 generator: unpredictable enough for ids
// and far cheaper than a syscall per request.
func newRequestID(b *[36]byte) {
	const hex = "0123456789abcdef"
	a, c := rand.Uint64(), rand.Uint64()
	a = a&^(0xf<<12) | 4<<12 // version 4
	c = c&^(3<<62) | 2<<62   // RFC 4122 variant
	j := 0
	for i := 0; i < 16; i++ {
		var v byte
		if i < 8 {
			v = byte(a >> (56 - 8*i))
		} else {
			v = byte(c >> (56 - 8*(i-8)))
		}
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hex[v>>4], hex[v&0xf]
		j += 2
	}
}

// frozen returns b as a string without copying. The caller must never
// write to b again; the string keeps b's enclosing object alive, which for
// the per-request state is what we want: ids and trace headers are made
// once per request and die with it, without an allocation each.
func frozen(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// RequestID returns the request id the gateway assigned to the request
// whose context is ctx, or "" outside the gateway.
func RequestID(ctx context.Context) string {
	if st := stateFrom(ctx); st != nil {
		return st.id
	}
	return ""
}
