package balancer

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CookieSettings configures a [CookieSticky].
type CookieSettings struct {
	// Name is the cookie's name. If empty, "gw_sticky" is used.
	Name string
	// Secret keys the HMAC-SHA256 that signs cookies and hides instance
	// addresses. It must be at least 16 bytes, and the same on every
	// gateway replica; changing it re-pins every client.
	Secret []byte
	// TTL is how long a pin lasts. If zero, 24h is used. A pin is renewed
	// when less than half of its TTL is left, so an active client stays.
	TTL time.Duration
	// Secure restricts the cookie to HTTPS.
	Secure bool
	// Now returns the current time for expiry. If nil, time.Now is used.
	Now func() time.Time
}

// ErrCookieSecret is returned by [NewCookieSticky] for a missing or short
// secret.
var ErrCookieSecret = errors.New("balancer: sticky cookie secret must be at least 16 bytes")

const (
	defaultCookieName = "gw_sticky"
	defaultCookieTTL  = 24 * time.Hour
	minSecretLen      = 16
	idLen             = 16 // hex characters of an instance id (64 bits)
	macLen            = 43 // base64url characters of an HMAC-SHA256
)

// CookieSticky pins each client to one instance with a signed cookie, for
// backends that keep per-client state. A client without a valid pin, or
// whose instance left the pool or became unavailable, is balanced by the
// wrapped policy and pinned anew.
//
// The cookie is "id.expiry.mac": id is a keyed hash of the instance's
// address, so clients learn nothing about the backends; expiry is a unix
// time; mac is HMAC-SHA256 over the cookie name, id and expiry, checked in
// constant time. A forged, altered or expired cookie is ignored.
//
// It is safe for concurrent use. It keeps the ids of the last pool it saw
// and recomputes them when the membership changes, so one CookieSticky
// should serve one service.
type CookieSticky struct {
	next   Balancer
	name   string
	ttl    time.Duration
	secure bool
	now    func() time.Time
	secret []byte

	macs sync.Pool // *macState: HMAC state reused between picks

	mu   sync.Mutex // serialises rebuilding ids
	pool atomic.Pointer[stickyIDs]
}

// stickyIDs holds the cookie id of each instance of one pool.
type stickyIDs struct {
	pool []*Instance
	ids  []string
}

// macState is one reusable HMAC with its buffers, so that checking a
// cookie allocates nothing.
type macState struct {
	h   hash.Hash
	msg []byte
	sum []byte
	enc [macLen]byte
	got []byte
}

// NewCookieSticky returns a CookieSticky that balances unpinned clients
// with next (if nil, a [RoundRobin]). It returns [ErrCookieSecret] if the
// secret is shorter than 16 bytes. The settings are copied.
func NewCookieSticky(next Balancer, s CookieSettings) (*CookieSticky, error) {
	if len(s.Secret) < minSecretLen {
		return nil, ErrCookieSecret
	}
	if next == nil {
		next = &RoundRobin{}
	}
	b := &CookieSticky{
		next:   next,
		name:   s.Name,
		ttl:    s.TTL,
		secure: s.Secure,
		now:    s.Now,
		secret: append([]byte(nil), s.Secret...),
	}
	if b.name == "" {
		b.name = defaultCookieName
	}
	if b.ttl <= 0 {
		b.ttl = defaultCookieTTL
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.macs.New = func() any {
		return &macState{h: hmac.New(sha256.New, b.secret), sum: make([]byte, 0, sha256.Size)}
	}
	return b, nil
}

// Pick implements [Balancer]. It cannot pin a client, since it has no way to
// set the cookie; the gateway uses [CookieSticky.PickSticky].
func (b *CookieSticky) Pick(r *http.Request, pool []*Instance) (*Instance, error) {
	in, _, err := b.PickSticky(r, pool)
	return in, err
}

// PickSticky implements [Sticky]. It returns the instance named by r's
// cookie if that instance is in pool and available, with setCookie nil
// unless the pin is due for renewal. Otherwise it picks with the wrapped
// policy and returns the cookie that pins the client to the result.
func (b *CookieSticky) PickSticky(r *http.Request, pool []*Instance) (*Instance, *http.Cookie, error) {
	now := b.now()
	ids := b.idsFor(pool)
	if r != nil {
		if i, exp, ok := b.pinned(r.Header, ids, now.Unix()); ok {
			if time.Duration(exp-now.Unix())*time.Second > b.ttl/2 {
				return ids.pool[i], nil, nil
			}
			return ids.pool[i], b.cookie(ids.ids[i], now), nil
		}
	}
	in, err := b.next.Pick(r, pool)
	if err != nil {
		return nil, nil, err
	}
	for i, p := range ids.pool {
		if p == in {
			return in, b.cookie(ids.ids[i], now), nil
		}
	}
	// The wrapped policy returned an instance outside pool.
	return in, b.cookie(b.id(in), now), nil
}

// pinned returns the index in ids of the available instance that a valid
// cookie in h names, and the cookie's expiry.
func (b *CookieSticky) pinned(h http.Header, ids *stickyIDs, now int64) (int, int64, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var name, value string
			name, value, line = cutCookie(line)
			if name != b.name {
				continue
			}
			id, exp, ok := b.verify(value, now)
			if !ok {
				continue
			}
			for i, s := range ids.ids {
				if s == id && ids.pool[i].Available() {
					return i, exp, true
				}
			}
		}
	}
	return 0, 0, false
}

// cutCookie returns the first name=value pair of a Cookie header line and
// the rest of the line, without allocating. A malformed pair gives an empty
// name.
func cutCookie(line string) (name, value, rest string) {
	pair, rest, _ := strings.Cut(line, ";")
	name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
	if !ok {
		return "", "", rest
	}
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return name, value, rest
}

// verify checks a cookie value's form, expiry and MAC, and returns its id.
func (b *CookieSticky) verify(v string, now int64) (id string, exp int64, ok bool) {
	if len(v) < idLen+1+1+1+macLen || v[idLen] != '.' || v[len(v)-macLen-1] != '.' {
		return "", 0, false
	}
	payload, mac := v[:len(v)-macLen-1], v[len(v)-macLen:]
	exp, ok = parseUnix(payload[idLen+1:])
	if !ok || exp <= now {
		return "", 0, false
	}
	m := b.macs.Get().(*macState)
	defer b.macs.Put(m)
	want := m.sign(b.name, payload)
	m.got = append(m.got[:0], mac...)
	if subtle.ConstantTimeCompare(want, m.got) != 1 {
		return "", 0, false
	}
	return payload[:idLen], exp, true
}

// parseUnix parses a positive decimal unix time without allocating on
// malformed input (strconv's errors allocate).
func parseUnix(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// sign returns the base64url MAC of payload under the cookie name. The
// result aliases m and is valid until m's next use.
func (m *macState) sign(name, payload string) []byte {
	m.msg = append(m.msg[:0], name...)
	m.msg = append(m.msg, 0)
	m.msg = append(m.msg, payload...)
	m.h.Reset()
	m.h.Write(m.msg)
	m.sum = m.h.Sum(m.sum[:0])
	base64.RawURLEncoding.Encode(m.enc[:], m.sum)
	return m.enc[:]
}

// cookie returns a cookie pinning the client to the instance with id until
// now + TTL.
func (b *CookieSticky) cookie(id string, now time.Time) *http.Cookie {
	payload := id + "." + strconv.FormatInt(now.Add(b.ttl).Unix(), 10)
	m := b.macs.Get().(*macState)
	mac := string(m.sign(b.name, payload))
	b.macs.Put(m)
	return &http.Cookie{
		Name:     b.name,
		Value:    payload + "." + mac,
		Path:     "/",
		MaxAge:   int(b.ttl / time.Second),
		Secure:   b.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
}

// id returns the cookie id of an instance: a keyed hash of its address, so
// that it is stable across gateway replicas sharing the secret but reveals
// nothing about the address.
func (b *CookieSticky) id(in *Instance) string {
	h := hmac.New(sha256.New, b.secret)
	h.Write([]byte("instance\x00"))
	h.Write([]byte(in.String()))
	return hex.EncodeToString(h.Sum(nil))[:idLen]
}

// idsFor returns the ids of pool's instances, recomputing them only when
// the membership differs from the last pool (compared pointer by pointer:
// exact, and a few nanoseconds per instance).
func (b *CookieSticky) idsFor(pool []*Instance) *stickyIDs {
	if s := b.pool.Load(); s != nil && samePool(s.pool, pool) {
		return s
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.pool.Load(); s != nil && samePool(s.pool, pool) {
		return s
	}
	s := &stickyIDs{pool: append([]*Instance(nil), pool...), ids: make([]string, len(pool))}
	for i, in := range pool {
		s.ids[i] = b.id(in)
	}
	b.pool.Store(s)
	return s
}

// samePool reports whether a and b hold the same instances in the same order.
func samePool(a, b []*Instance) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
