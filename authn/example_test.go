package authn_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/pyairtable/api-gateway/authn"
)

func ExampleNewJWT() {
	secret := []byte("an-example-secret-of-32-bytes!!!")
	tok, err := authn.MintHS256(secret, authn.MintClaims{
		Subject: "alice",
		Roles:   []string{"editor"},
		Tenant:  "acme",
	})
	if err != nil {
		panic(err)
	}
	j, err := authn.NewJWT(authn.JWTSettings{Secret: secret})
	if err != nil {
		panic(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	p, err := j.Authenticate(r)
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Subject, p.Roles, p.Tenant, p.Method)
	// Output: alice [editor] acme jwt
}

func ExamplePolicy_Authorize() {
	p := authn.Policy{Roles: []string{"admin", "editor"}, Permissions: []string{"orders:write"}}
	alice := &authn.Principal{Subject: "alice", Roles: []string{"editor"}, Permissions: []string{"orders:write"}}
	bob := &authn.Principal{Subject: "bob", Roles: []string{"editor"}}
	fmt.Println(p.Authorize(alice))
	fmt.Println(p.Authorize(bob))
	fmt.Println(p.Authorize(nil))
	// Output:
	// <nil>
	// authn: forbidden_permission
	// authn: missing
}

func ExampleMiddleware() {
	keys, err := authn.NewAPIKeys([]authn.APIKey{
		{Name: "ci", KeySHA256: authn.HashAPIKey("s3cr3t-ci-key"), Roles: []string{"deployer"}},
	}, "")
	if err != nil {
		panic(err)
	}
	h := authn.Middleware(keys, authn.Policy{Roles: []string{"deployer"}}, nil)(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, _ := authn.FromContext(r.Context())
			fmt.Fprintf(w, "hello %s", p.KeyName)
		}))

	for _, key := range []string{"s3cr3t-ci-key", "guess", ""} {
		r := httptest.NewRequest(http.MethodPost, "/deploy", nil)
		if key != "" {
			r.Header.Set("X-API-Key", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"), strings.TrimSpace(w.Body.String()))
	}
	// Output:
	// 200  hello ci
	// 401 Bearer {"type":"about:blank","title":"Unauthorized","status":401,"detail":"Valid credentials are required."}
	// 401 Bearer {"type":"about:blank","title":"Unauthorized","status":401,"detail":"Valid credentials are required."}
}

func ExampleChain() {
	secret := []byte("an-example-secret-of-32-bytes!!!")
	j, _ := authn.NewJWT(authn.JWTSettings{Secret: secret})
	keys, _ := authn.NewAPIKeys([]authn.APIKey{{Name: "ci", KeySHA256: authn.HashAPIKey("ci-key")}}, "")
	a := authn.Chain(j, keys)

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-API-Key", "ci-key")
	p, err := a.Authenticate(r)
	fmt.Println(p.Method, p.KeyName, err)
	// Output: api_key ci <nil>
}
