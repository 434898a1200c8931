package authn

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

const (
	// maxJWKSBytes bounds a JWKS response; real sets are a few KiB.
	maxJWKSBytes = 1 << 20
	// jwksFetchTimeout bounds one fetch even with a caller-supplied client
	// that has no timeout.
	jwksFetchTimeout = 10 * time.Second
	// A server's max-age is honoured within these bounds: below the floor a
	// misconfigured "max-age=0" would mean a fetch per request, above the
	// ceiling a revoked key would live for too long.
	minJWKSMaxAge = time.Second
	maxJWKSMaxAge = 24 * time.Hour
)

// jwksSource holds the key set fetched from one JWKS URL.
//
// We fetch over HTTP ourselves rather than with jwkset.NewStorageFromHTTP
// because the latter ignores Cache-Control, reads the clock directly, fetches
// from its constructor and refreshes from a goroutine started there; the
// response is still decoded by jwkset and keys are looked up through a
// keyfunc/v3 Keyfunc. Snapshots are immutable and swapped atomically, so
// verification never waits for a fetch unless it needs keys it lacks.
type jwksSource struct {
	url          string
	client       *http.Client
	logger       *slog.Logger
	now          func() time.Time
	refresh      time.Duration // used when the server sends no max-age
	unknownEvery time.Duration // min gap between unknown-kid refetches; also the retry delay after a failure

	snap atomic.Pointer[jwksSnapshot]
	sem  chan struct{} // one fetch at a time

	mu          sync.Mutex
	nextAttempt time.Time // after a failed fetch, no on-demand fetch before this
	lastUnknown time.Time // last unknown-kid refetch

	running atomic.Bool
}

type jwksSnapshot struct {
	kf      keyfunc.Keyfunc
	sum     [sha256.Size]byte
	expires time.Time
	// gen changes whenever the served key set changes; cached tokens
	// verified under an older generation are not served.
	gen uint64
}

// signatureUses are the JWK "use" values accepted for verification: "sig"
// and absent. Encryption keys are refused.
var signatureUses = []jwkset.USE{jwkset.UseSig, ""}

func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: JWKSURL: %v", ErrInvalidSettings, err)
	}
	switch {
	case u.Host == "":
		return fmt.Errorf("%w: JWKSURL %q has no host", ErrInvalidSettings, u.Redacted())
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		// Plain HTTP would let anyone on the path substitute keys, so it is
		// only allowed for a JWKS served on this machine.
	default:
		return fmt.Errorf("%w: JWKSURL %q must use https (http only for loopback)", ErrInvalidSettings, u.Redacted())
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultJWKSClient fetches rarely, so it keeps no idle connections: nothing
// lingers (no goroutines, no sockets) between fetches or after Run ends.
func defaultJWKSClient() *http.Client {
	return &http.Client{
		Timeout: jwksFetchTimeout,
		Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  jwksFetchTimeout,
			MaxResponseHeaderBytes: 64 << 10,
			DisableKeepAlives:      true,
			ForceAttemptHTTP2:      true,
		},
	}
}

func (s *jwksSource) acquire(ctx context.Context) bool {
	select {
	case s.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *jwksSource) tryAcquire() bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *jwksSource) release() { <-s.sem }

func (s *jwksSource) gen() uint64 {
	if sn := s.snap.Load(); sn != nil {
		return sn.gen
	}
	return 0
}

func (s *jwksSource) retryBlocked(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Before(s.nextAttempt)
}

// ensure makes sure a usable snapshot exists before verification. Without
// any keys yet, it waits for a fetch; with stale keys only one caller
// refreshes while the others carry on with the stale set.
func (s *jwksSource) ensure(ctx context.Context, now time.Time) {
	sn := s.snap.Load()
	if sn != nil && now.Before(sn.expires) || s.retryBlocked(now) {
		return
	}
	if sn == nil {
		if !s.acquire(ctx) {
			return
		}
	} else if !s.tryAcquire() {
		return
	}
	defer s.release()
	// Another caller may have fetched while we waited.
	if sn = s.snap.Load(); sn != nil && now.Before(sn.expires) || s.retryBlocked(now) {
		return
	}
	_ = s.fetch(ctx, now)
}

// refetchUnknown refetches the set because a token names a kid it lacks, at
// most once per unknownEvery. When a refetch is refused by the rate limit it
// still waits for one in flight, whose result the caller then sees.
func (s *jwksSource) refetchUnknown(ctx context.Context, now time.Time) {
	s.mu.Lock()
	allowed := !now.Before(s.nextAttempt) &&
		(s.lastUnknown.IsZero() || now.Sub(s.lastUnknown) >= s.unknownEvery)
	if allowed {
		s.lastUnknown = now
	}
	s.mu.Unlock()
	if !s.acquire(ctx) {
		return
	}
	defer s.release()
	if allowed {
		_ = s.fetch(ctx, now)
	}
}

// fetch downloads and installs the key set; the caller holds sem. On
// failure the previous snapshot stays in use and on-demand fetches pause
// for unknownEvery.
func (s *jwksSource) fetch(ctx context.Context, now time.Time) error {
	err := s.doFetch(ctx, now)
	s.mu.Lock()
	if err != nil {
		s.nextAttempt = now.Add(s.unknownEvery)
	} else {
		s.nextAttempt = time.Time{}
	}
	s.mu.Unlock()
	if err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "authn: JWKS fetch failed",
			slog.String("url", s.redactedURL()), slog.String("error", err.Error()))
	}
	return err
}

func (s *jwksSource) redactedURL() string {
	u, err := url.Parse(s.url)
	if err != nil {
		return ""
	}
	u.RawQuery = "" // query parameters may carry credentials
	return u.Redacted()
}

func (s *jwksSource) doFetch(ctx context.Context, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("JWKS status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("reading JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	sum := sha256.Sum256(body)
	ttl := s.refresh
	if age, ok := maxAge(resp.Header); ok {
		ttl = min(max(age, minJWKSMaxAge), maxJWKSMaxAge)
	}
	old := s.snap.Load()
	if old != nil && old.sum == sum {
		// Same keys: extend the lifetime, keep the generation and thus the
		// verified-token cache.
		s.snap.Store(&jwksSnapshot{kf: old.kf, sum: sum, expires: now.Add(ttl), gen: old.gen})
		return nil
	}

	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("decoding JWKS: %w", err)
	}
	store := jwkset.NewMemoryStorage()
	usable := 0
	for _, m := range set.Keys {
		// One unsupported or broken key must not take the others down.
		k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil || checkPublicKey(publicOf(k.Key())) != nil {
			continue
		}
		if err := store.KeyWrite(ctx, k); err != nil {
			return err
		}
		usable++
	}
	if usable == 0 {
		return errors.New("JWKS has no usable signature keys")
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: context.Background(), Storage: store, UseWhitelist: signatureUses})
	if err != nil {
		return err
	}
	gen := uint64(1)
	if old != nil {
		gen = old.gen + 1
	}
	s.snap.Store(&jwksSnapshot{kf: kf, sum: sum, expires: now.Add(ttl), gen: gen})
	return nil
}

func publicOf(k any) any {
	if p, ok := k.(interface{ Public() crypto.PublicKey }); ok {
		return p.Public()
	}
	return k
}

// maxAge returns the Cache-Control max-age of h, if any.
func maxAge(h http.Header) (time.Duration, bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
			if !ok || !strings.EqualFold(name, "max-age") {
				continue
			}
			n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
			if err != nil || n < 0 {
				return 0, false
			}
			if n > int64(maxJWKSMaxAge/time.Second) {
				n = int64(maxJWKSMaxAge / time.Second)
			}
			return time.Duration(n) * time.Second, true
		}
	}
	return 0, false
}

// key finds the verification key(s) for token in the JWKS. A token without
// kid gets every key that fits its alg.
func (s *jwksSource) key(ctx context.Context, now time.Time, token *jwt.Token, kid string) (any, error) {
	s.ensure(ctx, now)
	alg := token.Method.Alg()
	if kid == "" {
		sn := s.snap.Load()
		if sn == nil {
			return nil, unauthorized(ReasonUnknownKey, errors.New("no JWKS keys available"))
		}
		all, err := sn.kf.VerificationKeySet(ctx)
		if err != nil {
			return nil, unauthorized(ReasonUnknownKey, err)
		}
		var fit jwt.VerificationKeySet
		for _, k := range all.Keys {
			if keyFits(alg, k) {
				fit.Keys = append(fit.Keys, k)
			}
		}
		if len(fit.Keys) == 0 {
			return nil, unauthorized(ReasonUnknownKey, errors.New("no JWKS key fits the token's alg"))
		}
		return fit, nil
	}
	k, err := s.lookup(ctx, token)
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		s.refetchUnknown(ctx, now)
		k, err = s.lookup(ctx, token)
	}
	switch {
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return nil, unauthorized(ReasonUnknownKey, errors.New("kid not in JWKS"))
	case err != nil:
		// alg differs from the JWK's alg, or the JWK is not for signatures.
		return nil, unauthorized(ReasonBadAlgorithm, err)
	case !keyFits(alg, k):
		return nil, unauthorized(ReasonBadAlgorithm, fmt.Errorf("alg %s does not fit the key for this kid", alg))
	}
	return k, nil
}

func (s *jwksSource) lookup(ctx context.Context, token *jwt.Token) (any, error) {
	sn := s.snap.Load()
	if sn == nil {
		return nil, jwkset.ErrKeyNotFound
	}
	return sn.kf.KeyfuncCtx(ctx)(token)
}

// has reports whether the current snapshot holds kid, without fetching.
func (s *jwksSource) has(ctx context.Context, kid string) bool {
	sn := s.snap.Load()
	if sn == nil {
		return false
	}
	_, err := sn.kf.Storage().KeyRead(ctx, kid)
	return err == nil
}

// run refreshes the set whenever it goes stale, until ctx is done.
func (s *jwksSource) run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("authn: JWT.Run is already running")
	}
	defer s.running.Store(false)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := s.now()
		wait := s.unknownEvery
		if s.acquire(ctx) {
			sn := s.snap.Load()
			if sn == nil || !now.Before(sn.expires) {
				_ = s.fetch(ctx, now)
			}
			s.release()
		}
		if sn := s.snap.Load(); sn != nil && now.Before(sn.expires) {
			wait = sn.expires.Sub(now)
		}
		t.Reset(wait)
	}
}
