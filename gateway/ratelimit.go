package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pyairtable/api-gateway/ratelimit"
)

// RateKey says whose allowance a request draws from.
type RateKey int

const (
	// KeyIP limits each client address (trusted proxies honoured).
	KeyIP RateKey = iota
	// KeyGlobal limits all clients together.
	KeyGlobal
	// KeyUser limits each authenticated subject; unauthenticated
	// requests are limited by address.
	KeyUser
	// KeyAPIKey limits each API key; other requests by subject, then
	// address.
	KeyAPIKey
)

// RateLimitPolicy is one limit: a limiter and the key it is applied by.
type RateLimitPolicy struct {
	// Name labels the policy in metrics and logs ("global", "per_ip").
	Name string
	// Limiter decides; the gateway passes it the request's key.
	Limiter ratelimit.Limiter
	// Key selects whose allowance is used.
	Key RateKey
	// Limit and Window describe the policy for the RateLimit-Policy
	// header ("100;w=1").
	Limit  int
	Window time.Duration
}

// RateLimitHeaders chooses which rate-limit headers responses carry. Each
// header costs every response a map entry, its sorting and serialisation
// and its bytes (the seven of the default are about 200 bytes, and in
// profiles of small proxied requests the largest single cost of rate
// limiting), so operators who know their clients can send fewer.
type RateLimitHeaders uint8

const (
	// RateLimitHeadersBoth sends RateLimit-Limit, RateLimit-Remaining,
	// RateLimit-Reset and RateLimit-Policy (the IETF draft) and the
	// X-RateLimit-Limit, -Remaining and -Reset forms most clients read, on
	// every limited response. The default.
	RateLimitHeadersBoth RateLimitHeaders = iota
	// RateLimitHeadersIETF sends only the RateLimit-* headers.
	RateLimitHeadersIETF
	// RateLimitHeadersLegacy sends only the X-RateLimit-* headers.
	RateLimitHeadersLegacy
	// RateLimitHeadersOnDenial sends both forms on 429 answers only;
	// allowed responses carry none.
	RateLimitHeadersOnDenial
)

// ProblemRateLimited is the answer to a request over its limit.
var ProblemRateLimited = Problem{Type: "rate-limited", Title: "Too many requests", Status: http.StatusTooManyRequests}

// compiledLimit is a policy with its header value precomputed.
type compiledLimit struct {
	RateLimitPolicy
	policyHeader string
	limitHeader  string // Limit in decimal, for decisions that report it
}

func compileLimits(ps []RateLimitPolicy) []compiledLimit {
	out := make([]compiledLimit, 0, len(ps))
	for _, p := range ps {
		if p.Limiter == nil {
			continue
		}
		h := strconv.Itoa(p.Limit) + ";w=" + strconv.FormatInt(int64((p.Window+time.Second-1)/time.Second), 10)
		out = append(out, compiledLimit{RateLimitPolicy: p, policyHeader: h, limitHeader: strconv.Itoa(p.Limit)})
	}
	return out
}

// rateKey returns the key of a request under k.
func (st *requestState) rateKey(k RateKey) string {
	switch k {
	case KeyGlobal:
		return "*"
	case KeyAPIKey:
		if p := st.principal; p != nil && p.KeyName != "" {
			return "k:" + p.KeyName
		}
		fallthrough
	case KeyUser:
		if p := st.principal; p != nil && p.Subject != "" {
			return "u:" + p.Subject
		}
	}
	return st.ip()
}

// ip returns the client address as a string, formatted once per request.
func (st *requestState) ip() string {
	if st.ipKey == "" {
		st.ipKey = st.clientIP.String()
	}
	return st.ipKey
}

// val returns a one-element header value backed by the request's state,
// so setting a header does not allocate a slice.
func (st *requestState) val(i int, v string) []string {
	st.vals[i][0] = v
	return st.vals[i][:1:1]
}

// limitHandler applies limits: those keyed by address or globally before
// authentication (floods are refused before any signature is checked),
// those keyed by identity after it.
func (g *Gateway) limitHandler(limits []compiledLimit, identity bool, next http.Handler) http.Handler {
	var mine []compiledLimit
	for _, l := range limits {
		if (l.Key == KeyUser || l.Key == KeyAPIKey) == identity {
			mine = append(mine, l)
		}
	}
	if len(mine) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateFrom(r.Context())
		for i := range mine {
			l := &mine[i]
			d, err := l.Limiter.Allow(r.Context(), st.rateKey(l.Key), 1)
			if g.onRateLimit != nil {
				g.onRateLimit(l.Name, d.Allowed, err)
			}
			if !d.Allowed {
				st.setRateHeaders(w.Header(), l, d, RateLimitHeadersBoth)
				p := ProblemRateLimited
				p.RetryAfter = max(d.RetryAfter, time.Second)
				WriteProblem(w, r, p)
				return
			}
			// Report the policy closest to its limit.
			if st.rate == nil || d.Remaining < st.rateDecision.Remaining {
				st.rate, st.rateDecision = l, d
			}
		}
		if st.rate != nil && st.table.rateHeaders != RateLimitHeadersOnDenial {
			st.setRateHeaders(w.Header(), st.rate, st.rateDecision, st.table.rateHeaders)
		}
		next.ServeHTTP(w, r)
	})
}

// smallInts are the decimal forms of small numbers, so header values of
// everyday limits are not formatted per request.
var smallInts = func() (s [1025]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return
}()

func itoa(n int) string {
	if n >= 0 && n < len(smallInts) {
		return smallInts[n]
	}
	return strconv.Itoa(n)
}

// setRateHeaders writes the IETF RateLimit headers and their X- forms,
// slicing one per-request array instead of allocating a slice per header.
func (st *requestState) setRateHeaders(h http.Header, l *compiledLimit, d ratelimit.Decision, which RateLimitHeaders) {
	reset := int((d.Reset + time.Second - 1) / time.Second)
	v := &st.rateVals
	v[0] = l.limitHeader
	if d.Limit != l.Limit {
		v[0] = itoa(d.Limit)
	}
	v[1] = itoa(max(d.Remaining, 0))
	if d.Remaining >= len(smallInts) {
		if st.numUsed {
			// Already frozen into a string for an earlier header: never
			// write under it.
			v[1] = strconv.Itoa(d.Remaining)
		} else {
			v[1] = frozen(strconv.AppendInt(st.numBuf[:0], int64(d.Remaining), 10))
			st.numUsed = true
		}
	}
	v[2], v[3] = itoa(reset), l.policyHeader
	if which != RateLimitHeadersLegacy {
		h["Ratelimit-Limit"] = v[0:1:1]
		h["Ratelimit-Remaining"] = v[1:2:2]
		h["Ratelimit-Reset"] = v[2:3:3]
		h["Ratelimit-Policy"] = v[3:4:4]
	}
	if which != RateLimitHeadersIETF {
		h["X-Ratelimit-Limit"] = v[0:1:1]
		h["X-Ratelimit-Remaining"] = v[1:2:2]
		h["X-Ratelimit-Reset"] = v[2:3:3]
	}
}
