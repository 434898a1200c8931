package authn

import (
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkJWTMiddleware measures Middleware with a JWT authenticator and a
// role policy: "cold" verifies HS256 on every request (cache disabled),
// "cached" is the steady state of a client repeating its token.
func BenchmarkJWTMiddleware(b *testing.B) {
	for _, bc := range []struct {
		name      string
		cacheSize int
	}{{"cold", -1}, {"cached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			clock := newClock()
			j := mustJWT(b, JWTSettings{Secret: testSecret, Now: clock.Now, CacheSize: bc.cacheSize})
			r := request(bearer(sign(b, jwt.SigningMethodHS256, testSecret, "", claimsAt(clock.Now())))...)
			var ok int
			h := Middleware(j, Policy{Roles: []string{"reader"}}, nil)(
				http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ok++ }))
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
			if ok == 0 {
				b.Fatal("no request reached the handler")
			}
		})
	}
}

// BenchmarkAPIKey measures APIKeys.Authenticate against 10 configured keys,
// all of which are compared on every call.
func BenchmarkAPIKey(b *testing.B) {
	keys := make([]APIKey, 10)
	for i := range keys {
		keys[i] = APIKey{Name: string(rune('a' + i)), KeySHA256: HashAPIKey("key-number-" + string(rune('a'+i)))}
	}
	k, err := NewAPIKeys(keys, "")
	if err != nil {
		b.Fatal(err)
	}
	r := request("X-API-Key", "key-number-e")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}
