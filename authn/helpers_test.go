package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef") // 32 bytes

// Key generation is slow under -race; every test shares one key per type.
var (
	rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	ecKey = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
	edKey = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func rsaPublicPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// fakeClock is a settable clock for Now fields.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sign signs claims with method and key, adding kid when not empty.
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("SignedString(%s) error = %v", m.Alg(), err)
	}
	return s
}

// claimsAt returns typical valid claims issued at now.
func claimsAt(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":   "user-1",
		"iss":   "https://issuer.test",
		"aud":   "api",
		"iat":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
		"roles": []string{"reader"},
	}
}

// with returns a copy of c with the given changes; a nil value deletes.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// checkGoroutines fails the test if it ends with more goroutines than it
// started with. Call it first so that its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("NumGoroutine() = %d, want <= %d\n%s", n, before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// gateway is Middleware in front of a real backend, both on loopback.
type gateway struct {
	URL     string
	hits    atomic.Int64 // requests that reached the backend
	client  *http.Client
	reasons chan Reason // one per refused request
}

func newGateway(t *testing.T, a Authenticator, p Policy) *gateway {
	t.Helper()
	g := &gateway{reasons: make(chan Reason, 1)}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		_, _ = io.WriteString(w, "backend")
	}))
	t.Cleanup(backend.Close)
	target, _ := url.Parse(backend.URL)
	proxyTransport := &http.Transport{}
	t.Cleanup(proxyTransport.CloseIdleConnections)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: proxyTransport,
	}
	onError := func(w http.ResponseWriter, r *http.Request, err error) {
		select {
		case g.reasons <- AsError(err).Reason:
		default:
		}
		WriteError(w, r, err)
	}
	front := httptest.NewServer(Middleware(a, p, onError)(proxy))
	t.Cleanup(front.Close)
	g.URL = front.URL
	clientTransport := &http.Transport{}
	t.Cleanup(clientTransport.CloseIdleConnections)
	g.client = &http.Client{Transport: clientTransport, Timeout: 10 * time.Second}
	return g
}

type result struct {
	status    int
	challenge string // WWW-Authenticate
	ctype     string
	body      string
	reason    Reason // "" when the request was not refused
}

// do sends a GET to path with the given header lines (pairs of name, value).
func (g *gateway) do(t *testing.T, path string, header ...string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	res := result{
		status:    resp.StatusCode,
		challenge: resp.Header.Get("WWW-Authenticate"),
		ctype:     resp.Header.Get("Content-Type"),
		body:      string(body),
	}
	select {
	case res.reason = <-g.reasons:
	default:
	}
	return res
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// reasonOf returns the Reason of an *Error, or "" for other errors.
func reasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func mustJWT(t testing.TB, s JWTSettings) *JWT {
	t.Helper()
	j, err := NewJWT(s)
	if err != nil {
		t.Fatalf("NewJWT() error = %v", err)
	}
	return j
}

func pub(k crypto.Signer) crypto.PublicKey { return k.Public() }

func request(header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://gw.test/x", nil)
	for i := 0; i < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}
