package authn

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestCacheHitReturnsSamePrincipal(t *testing.T) {
	clock := newClock()
	j := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now()))
	p1, err := j.Authenticate(request(bearer(tok)...))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := j.Authenticate(request(bearer(tok)...))
	if err != nil || p2 != p1 {
		t.Errorf("second Authenticate() = %p, %v; want the cached %p", p2, err, p1)
	}
	// Without a cache every call verifies and builds a new principal.
	nc := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now, CacheSize: -1})
	q1, _ := nc.Authenticate(request(bearer(tok)...))
	q2, _ := nc.Authenticate(request(bearer(tok)...))
	if q1 == nil || q1 == q2 {
		t.Errorf("uncached Authenticate() returned %p twice", q1)
	}
}

// TestCacheTimeWindow steps an injected clock across nbf and exp: the cache
// serves only inside [nbf, exp) while verification (with 30s leeway)
// decides outside it.
func TestCacheTimeWindow(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	j := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", with(claimsAt(t0),
		"nbf", t0.Add(10*time.Second).Unix(), "exp", t0.Add(60*time.Second).Unix()))

	steps := []struct {
		at         time.Duration
		want       Reason
		sameAsLast bool // the principal of the previous accepted step: a cache hit
	}{
		{at: 0},                // before nbf, within leeway: verified, not cached
		{at: 5 * time.Second},  // still before nbf: verified again
		{at: 10 * time.Second}, // nbf reached: verified and cached
		{at: 30 * time.Second, sameAsLast: true},
		{at: 60*time.Second - time.Nanosecond, sameAsLast: true},
		{at: 60 * time.Second}, // exp: never from cache; leeway lets it verify
		{at: 89 * time.Second}, // within leeway, still not cached
		{at: 90 * time.Second, want: ReasonExpired},
		{at: 30 * time.Second}, // clock set back: the entry was dropped at exp
	}
	var last *Principal
	for _, st := range steps {
		clock.mu.Lock()
		clock.t = t0.Add(st.at)
		clock.mu.Unlock()
		p, err := j.Authenticate(request(bearer(tok)...))
		if got := reasonOf(err); got != st.want {
			t.Fatalf("at %v: reason = %q (%v), want %q", st.at, got, err, st.want)
		}
		if err != nil {
			continue
		}
		if same := p == last; same != st.sameAsLast {
			t.Errorf("at %v: cache hit = %v, want %v", st.at, same, st.sameAsLast)
		}
		last = p
	}
}

func TestCacheBounded(t *testing.T) {
	for _, size := range []int{1, 7, 100, 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := newTokenCache(size)
			p := &Principal{}
			for i := range 5 * size {
				c.put(fmt.Sprintf("token-%d", i), p, 0, int64(1e18)+int64(i), 0)
				if n := c.len(); n > size {
					t.Fatalf("after %d puts len() = %d, want <= %d", i+1, n, size)
				}
			}
			if n := c.len(); n < size/2 {
				t.Errorf("len() = %d, want close to %d: the cache barely caches", n, size)
			}
			// The newest entry survives its own insertion.
			last := fmt.Sprintf("token-%d", 5*size-1)
			if c.get(last, 1, 0) != p {
				t.Errorf("get(%s) = nil, want the principal just put", last)
			}
		})
	}
}

func TestCacheEvictsExpiredFirst(t *testing.T) {
	c := newTokenCache(4) // one shard, sample covers all entries
	p := &Principal{}
	c.put("old", p, 0, 10, 0)
	for i := range 3 {
		c.put(fmt.Sprint("live", i), p, 0, 1000, 0)
	}
	c.put("new", p, 0, 1000, 0)
	if c.get("old", 5, 0) != nil {
		t.Error("soonest-expiring entry survived eviction")
	}
	for _, k := range []string{"live0", "live1", "live2", "new"} {
		if c.get(k, 5, 0) != p {
			t.Errorf("get(%s) = nil, want cached", k)
		}
	}
}

func TestCacheCollisionIsAMiss(t *testing.T) {
	c := newTokenCache(8)
	alice := &Principal{Subject: "alice"}
	c.put("token-alice", alice, 0, 100, 0)
	// Forge a collision: file alice's entry under the hash of bob's token.
	s := &c.shards[0]
	hb := maphash.String(c.seed, "token-bob")
	s.m[hb] = s.m[maphash.String(c.seed, "token-alice")]
	if got := c.get("token-bob", 1, 0); got != nil {
		t.Errorf("get(token-bob) = %+v, want nil: a hash collision returned another principal", got)
	}
	if got := c.get("token-alice", 1, 0); got != alice {
		t.Errorf("get(token-alice) = %v, want alice", got)
	}
}

func TestCacheGeneration(t *testing.T) {
	c := newTokenCache(8)
	p := &Principal{}
	c.put("t", p, 0, 100, 3)
	if c.get("t", 1, 3) != p || c.get("t", 1, 4) != nil {
		t.Error("an entry must be served only under its own key generation")
	}
}

func TestCacheConcurrent(t *testing.T) {
	clock := newClock()
	j := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now, CacheSize: 64})
	toks := make([]string, 128)
	for i := range toks {
		toks[i] = sign(t, jwt.SigningMethodHS256, testSecret, "", with(claimsAt(clock.Now()), "sub", fmt.Sprint("u", i)))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 400 {
				k := (i*7 + g) % len(toks)
				p, err := j.Authenticate(request(bearer(toks[k])...))
				if err != nil || p.Subject != fmt.Sprint("u", k) {
					t.Errorf("Authenticate(token %d) = %+v, %v", k, p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := j.cache.len(); n > 64 {
		t.Errorf("cache len() = %d, want <= 64", n)
	}
}

// nopWriter is a minimal ResponseWriter so that measurements see only the
// middleware.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func TestCachedPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	clock := newClock()
	j := mustJWT(t, JWTSettings{Secret: testSecret, Now: clock.Now})
	r := request(bearer(sign(t, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now())))...)
	if _, err := j.Authenticate(r); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() { _, _ = j.Authenticate(r) }); n != 0 {
		t.Errorf("cached Authenticate allocs = %v, want 0", n)
	}
	h := Middleware(j, Policy{Roles: []string{"reader"}}, nil)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w := &nopWriter{h: http.Header{}}
	if n := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, r) }); n > 2 {
		t.Errorf("cached Middleware allocs = %v, want <= 2 (context value and request copy)", n)
	}
	k := testAPIKeys(t)
	ra := request("X-API-Key", "bot-secret-key")
	if n := testing.AllocsPerRun(200, func() { _, _ = k.Authenticate(ra) }); n != 0 {
		t.Errorf("APIKeys.Authenticate allocs = %v, want 0", n)
	}
}
