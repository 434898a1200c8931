package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

type jwkSpec struct {
	kid string
	key crypto.PublicKey
	alg jwkset.ALG
	use jwkset.USE
}

// jwksJSON builds a JWK Set document with jwkset itself, as an identity
// provider would publish it.
func jwksJSON(t *testing.T, specs ...jwkSpec) []byte {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	ctx := context.Background()
	for _, s := range specs {
		k, err := jwkset.NewJWKFromKey(s.key, jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: s.alg, USE: s.use},
		})
		if err != nil {
			t.Fatalf("NewJWKFromKey(%s) error = %v", s.kid, err)
		}
		if err := store.KeyWrite(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := store.JSONPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// jwksServer serves a JWK Set on loopback and counts fetches.
type jwksServer struct {
	*httptest.Server
	hits         atomic.Int64
	body         atomic.Pointer[[]byte]
	cacheControl atomic.Pointer[string]
	fail         atomic.Bool
}

func newJWKSServer(t *testing.T, body []byte, cacheControl string) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(body, cacheControl)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if cc := *s.cacheControl.Load(); cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte, cacheControl string) {
	s.body.Store(&body)
	s.cacheControl.Store(&cacheControl)
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwksJWT returns a JWT on srv with the cache off, so that every call
// verifies and key selection is observable.
func jwksJWT(t *testing.T, srv *jwksServer, clock *fakeClock, mod ...func(*JWTSettings)) *JWT {
	t.Helper()
	s := JWTSettings{
		JWKSURL:   srv.URL + "/jwks.json",
		Now:       clock.Now,
		CacheSize: -1,
		Logger:    slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	for _, m := range mod {
		m(&s)
	}
	return mustJWT(t, s)
}

func authReason(t *testing.T, j *JWT, tok string) Reason {
	t.Helper()
	p, err := j.Authenticate(request(bearer(tok)...))
	if err == nil && p.Subject != "user-1" {
		t.Fatalf("Subject = %q, want user-1", p.Subject)
	}
	return reasonOf(err)
}

func TestJWKSAcceptByKID(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	srv := newJWKSServer(t, jwksJSON(t,
		jwkSpec{kid: "r1", key: pub(rsaKey()), alg: jwkset.AlgRS256, use: jwkset.UseSig},
		jwkSpec{kid: "e1", key: pub(ecKey()), alg: jwkset.AlgES256},
		jwkSpec{kid: "d1", key: pub(edKey())},
		jwkSpec{kid: "enc", key: pub(edKey()), use: jwkset.UseEnc},
	), "")
	j := jwksJWT(t, srv, clock, func(s *JWTSettings) { s.Secret = testSecret })
	c := claimsAt(clock.Now())
	tests := []struct {
		name string
		tok  string
		want Reason
	}{
		{"RS256 by kid", sign(t, jwt.SigningMethodRS256, rsaKey(), "r1", c), ""},
		{"ES256 by kid", sign(t, jwt.SigningMethodES256, ecKey(), "e1", c), ""},
		{"EdDSA by kid", sign(t, jwt.SigningMethodEdDSA, edKey(), "d1", c), ""},
		{"EdDSA without kid tries fitting keys", sign(t, jwt.SigningMethodEdDSA, edKey(), "", c), ""},
		{"ES256 without kid tries fitting keys", sign(t, jwt.SigningMethodES256, ecKey(), "", c), ""},
		{"ES256 with the kid of the RSA key", sign(t, jwt.SigningMethodES256, ecKey(), "r1", c), ReasonBadAlgorithm},
		{"encryption key refused", sign(t, jwt.SigningMethodEdDSA, edKey(), "enc", c), ReasonBadAlgorithm},
		{"HS256 with PEM of a JWKS key, its kid", sign(t, jwt.SigningMethodHS256, rsaPublicPEM(t), "r1", c), ReasonBadAlgorithm},
		{"RS256 by another key", sign(t, jwt.SigningMethodES256, newECKey(t), "e1", c), ReasonBadSignature},
		{"HS256 with secret still works", sign(t, jwt.SigningMethodHS256, testSecret, "", c), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := authReason(t, j, tt.tok); got != tt.want {
				t.Errorf("reason = %q, want %q", got, tt.want)
			}
		})
	}
	if got := srv.hits.Load(); got != 1 {
		t.Errorf("JWKS fetches = %d, want 1", got)
	}
}

func TestJWKSRotation(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	k1, k2, k3 := newECKey(t), newECKey(t), newECKey(t)
	srv := newJWKSServer(t, jwksJSON(t, jwkSpec{kid: "k1", key: k1.Public()}), "max-age=3600")
	j := jwksJWT(t, srv, clock) // JWKSUnknownKIDRateLimit 30s
	tok := func(k *ecdsa.PrivateKey, kid string) string {
		return sign(t, jwt.SigningMethodES256, k, kid, claimsAt(clock.Now()))
	}

	steps := []struct {
		name      string
		advance   time.Duration
		serve     []jwkSpec // nil: unchanged
		tok       func() string
		want      Reason
		wantFetch int64
	}{
		{name: "k1 fetched on first use", tok: func() string { return tok(k1, "k1") }, wantFetch: 1},
		{name: "k1 again from memory", tok: func() string { return tok(k1, "k1") }, wantFetch: 1},
		{name: "k2 unknown until the server publishes it", tok: func() string { return tok(k2, "k2") },
			want: ReasonUnknownKey, wantFetch: 2},
		{name: "published k2, but refetch rate limited", advance: 10 * time.Second,
			serve: []jwkSpec{{kid: "k1", key: k1.Public()}, {kid: "k2", key: k2.Public()}},
			tok:   func() string { return tok(k2, "k2") }, want: ReasonUnknownKey, wantFetch: 2},
		{name: "k2 accepted after the limit", advance: 20 * time.Second,
			tok: func() string { return tok(k2, "k2") }, wantFetch: 3},
		{name: "k3 unknown refetches at most once per 30s", advance: time.Second,
			tok: func() string { return tok(k3, "k3") }, want: ReasonUnknownKey, wantFetch: 3},
		{name: "k3 still unknown, still limited", advance: 28 * time.Second,
			tok: func() string { return tok(k3, "k3") }, want: ReasonUnknownKey, wantFetch: 3},
		{name: "k3 unknown after the limit refetches", advance: time.Second,
			tok: func() string { return tok(k3, "k3") }, want: ReasonUnknownKey, wantFetch: 4},
		{name: "k1 withdrawn but still known until a fetch", advance: 30 * time.Second,
			serve: []jwkSpec{{kid: "k2", key: k2.Public()}},
			tok:   func() string { return tok(k1, "k1") }, wantFetch: 4},
		{name: "an unknown kid refetches the set", tok: func() string { return tok(k3, "k3") },
			want: ReasonUnknownKey, wantFetch: 5},
		{name: "k1 refused after that refetch", tok: func() string { return tok(k1, "k1") },
			want: ReasonUnknownKey, wantFetch: 5},
		{name: "k2 still accepted", tok: func() string { return tok(k2, "k2") }, wantFetch: 5},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		if st.serve != nil {
			srv.set(jwksJSON(t, st.serve...), "max-age=3600")
		}
		if got := authReason(t, j, st.tok()); got != st.want {
			t.Errorf("%s: reason = %q, want %q", st.name, got, st.want)
		}
		if got := srv.hits.Load(); got != st.wantFetch {
			t.Errorf("%s: JWKS fetches = %d, want %d", st.name, got, st.wantFetch)
		}
	}
}

func TestJWKSCacheControl(t *testing.T) {
	checkGoroutines(t)
	tests := []struct {
		name         string
		cacheControl string
		refresh      time.Duration // JWKSRefresh
		wantTTL      time.Duration
	}{
		{"max-age honoured", "public, max-age=120", 0, 120 * time.Second},
		{"max-age quoted and mixed case", `Max-Age="300", must-revalidate`, 0, 300 * time.Second},
		{"no Cache-Control: JWKSRefresh default", "", 0, 10 * time.Minute},
		{"no max-age: JWKSRefresh", "no-transform", 90 * time.Second, 90 * time.Second},
		{"max-age=0 floored to 1s", "max-age=0", 0, time.Second},
		{"max-age capped to 24h", "max-age=999999999", 0, 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			k := ecKey()
			srv := newJWKSServer(t, jwksJSON(t, jwkSpec{kid: "k", key: k.Public()}), tt.cacheControl)
			j := jwksJWT(t, srv, clock, func(s *JWTSettings) { s.JWKSRefresh = tt.refresh })
			check := func(step string, want int64) {
				t.Helper()
				if got := authReason(t, j, sign(t, jwt.SigningMethodES256, k, "k", claimsAt(clock.Now()))); got != "" {
					t.Fatalf("%s: reason = %q, want accepted", step, got)
				}
				if got := srv.hits.Load(); got != want {
					t.Errorf("%s: JWKS fetches = %d, want %d", step, got, want)
				}
			}
			check("first use", 1)
			clock.Advance(tt.wantTTL - time.Millisecond)
			check("just before expiry", 1)
			clock.Advance(time.Millisecond)
			check("at expiry", 2)
			check("fresh again", 2)
		})
	}
}

func TestJWKSFailures(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	k := ecKey()
	srv := newJWKSServer(t, jwksJSON(t, jwkSpec{kid: "k", key: k.Public()}), "max-age=60")
	srv.fail.Store(true)
	j := jwksJWT(t, srv, clock)
	tok := func() string { return sign(t, jwt.SigningMethodES256, k, "k", claimsAt(clock.Now())) }

	steps := []struct {
		name      string
		advance   time.Duration
		fail      bool
		want      Reason
		wantFetch int64
	}{
		{name: "server down at start", fail: true, want: ReasonUnknownKey, wantFetch: 1},
		{name: "no hammering while down", advance: 29 * time.Second, fail: true, want: ReasonUnknownKey, wantFetch: 1},
		{name: "retry after the pause", advance: time.Second, fail: false, wantFetch: 2},
		{name: "stale keys kept when a refresh fails", advance: 60 * time.Second, fail: true, wantFetch: 3},
		{name: "stale keys, retry paused", advance: 10 * time.Second, fail: true, wantFetch: 3},
		{name: "recovered", advance: 20 * time.Second, fail: false, wantFetch: 4},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		srv.fail.Store(st.fail)
		if got := authReason(t, j, tok()); got != st.want {
			t.Errorf("%s: reason = %q, want %q", st.name, got, st.want)
		}
		if got := srv.hits.Load(); got != st.wantFetch {
			t.Errorf("%s: JWKS fetches = %d, want %d", st.name, got, st.wantFetch)
		}
	}
}

func TestJWKSBadDocuments(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	k := ecKey()
	good := jwksJSON(t, jwkSpec{kid: "k", key: k.Public()})
	for _, body := range []string{"not json", `{"keys":[]}`, `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k"}]}`} {
		t.Run(body, func(t *testing.T) {
			srv := newJWKSServer(t, []byte(body), "")
			j := jwksJWT(t, srv, clock)
			if got := authReason(t, j, sign(t, jwt.SigningMethodES256, k, "k", claimsAt(clock.Now()))); got != ReasonUnknownKey {
				t.Errorf("reason = %q, want unknown_key", got)
			}
			srv.set(good, "")
			clock.Advance(30 * time.Second)
			if got := authReason(t, j, sign(t, jwt.SigningMethodES256, k, "k", claimsAt(clock.Now()))); got != "" {
				t.Errorf("after the server recovered: reason = %q, want accepted", got)
			}
		})
	}
}

func TestJWKSKeyChangeFlushesTokenCache(t *testing.T) {
	checkGoroutines(t)
	clock := newClock()
	k1, k2 := newECKey(t), newECKey(t)
	srv := newJWKSServer(t, jwksJSON(t, jwkSpec{kid: "k1", key: k1.Public()}), "max-age=60")
	j := jwksJWT(t, srv, clock, func(s *JWTSettings) { s.CacheSize = 0 }) // cache on
	tok := sign(t, jwt.SigningMethodES256, k1, "k1", claimsAt(clock.Now()))
	p1, err := j.Authenticate(request(bearer(tok)...))
	if err != nil {
		t.Fatal(err)
	}
	// Same document after expiry: the cache survives.
	clock.Advance(61 * time.Second)
	if _, err := j.Authenticate(request(bearer(sign(t, jwt.SigningMethodES256, k2, "k1", claimsAt(clock.Now())))...)); err == nil {
		t.Fatal("token signed by a foreign key accepted")
	}
	if p2, err := j.Authenticate(request(bearer(tok)...)); err != nil || p2 != p1 {
		t.Fatalf("Authenticate() = %p, %v; want the cached %p", p2, err, p1)
	}
	// k1 revoked: once the set expires, the cached token itself triggers
	// the refresh and is refused.
	srv.set(jwksJSON(t, jwkSpec{kid: "k2", key: k2.Public()}), "max-age=60")
	clock.Advance(61 * time.Second)
	if _, err := j.Authenticate(request(bearer(tok)...)); reasonOf(err) != ReasonUnknownKey {
		t.Errorf("cached token after its key was revoked: error = %v, want unknown_key", err)
	}
	k2tok := sign(t, jwt.SigningMethodES256, k2, "k2", claimsAt(clock.Now()))
	q1, err := j.Authenticate(request(bearer(k2tok)...))
	if err != nil {
		t.Fatalf("k2 token: %v", err)
	}
	if q2, _ := j.Authenticate(request(bearer(k2tok)...)); q2 != q1 {
		t.Errorf("k2 token not cached under the new key set")
	}
}

func TestJWTRun(t *testing.T) {
	checkGoroutines(t)
	k := ecKey()
	srv := newJWKSServer(t, jwksJSON(t, jwkSpec{kid: "k", key: k.Public()}), "")
	// Real clock: Run sleeps on real timers.
	j := mustJWT(t, JWTSettings{JWKSURL: srv.URL, JWKSRefresh: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()

	deadline := time.Now().Add(5 * time.Second)
	for srv.hits.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("JWKS fetches = %d after 5s, want >= 3", srv.hits.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := j.Run(ctx); err == nil {
		t.Error("second concurrent Run() = nil, want an error")
	}
	tok := sign(t, jwt.SigningMethodES256, k, "k", claimsAt(time.Now()))
	if _, err := j.Authenticate(request(bearer(tok)...)); err != nil {
		t.Errorf("Authenticate() with Run active: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// Stopped means stopped: no fetch after Run returned.
	n := srv.hits.Load()
	time.Sleep(60 * time.Millisecond)
	if got := srv.hits.Load(); got != n {
		t.Errorf("JWKS fetches after Run returned = %d, want %d", got, n)
	}
}

func TestMaxAge(t *testing.T) {
	tests := []struct {
		in     []string
		want   time.Duration
		wantOK bool
	}{
		{nil, 0, false},
		{[]string{"no-cache"}, 0, false},
		{[]string{"max-age=60"}, time.Minute, true},
		{[]string{"public", "max-age=5"}, 5 * time.Second, true},
		{[]string{"s-maxage=9, max-age=7"}, 7 * time.Second, true},
		{[]string{"max-age=-1"}, 0, false},
		{[]string{"max-age=abc"}, 0, false},
	}
	for _, tt := range tests {
		h := http.Header{"Cache-Control": tt.in}
		got, ok := maxAge(h)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("maxAge(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}
