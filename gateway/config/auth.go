package config

import (
	"crypto"
	"fmt"
	"os"
	"strings"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/gateway"
)

// PublicKey is a PEM public key for asymmetric JWTs, inline or in a file.
type PublicKey struct {
	KID  string `yaml:"kid"`
	PEM  string `yaml:"pem"`
	File string `yaml:"file"`
}

// Issuer is one accepted token issuer with its own algorithm allow-list.
type Issuer struct {
	Issuer     string   `yaml:"issuer"`
	Algorithms []string `yaml:"algorithms"`
	Audience   []string `yaml:"audience"`
}

// Claims names the JWT claims the principal is read from.
type Claims struct {
	Roles       string `yaml:"roles"`
	Permissions string `yaml:"permissions"`
	Tenant      string `yaml:"tenant"`
}

// APIKey is a service-to-service key, configured by its SHA-256 hash.
type APIKey struct {
	Name        string   `yaml:"name"`
	KeySHA256   string   `yaml:"key_sha256"`
	Roles       []string `yaml:"roles"`
	Permissions []string `yaml:"permissions"`
	Tenant      string   `yaml:"tenant"`
}

// CORS configures cross-origin calls from browsers.
type CORS struct {
	AllowedOrigins   []string `yaml:"allowed_origins"`
	AllowedMethods   []string `yaml:"allowed_methods"`
	AllowedHeaders   []string `yaml:"allowed_headers"`
	ExposedHeaders   []string `yaml:"exposed_headers"`
	AllowCredentials bool     `yaml:"allow_credentials"`
	MaxAge           Duration `yaml:"max_age"`
}

// Headers configures the security headers of every response; "-" omits one.
type Headers struct {
	Enabled               *bool  `yaml:"enabled"`
	FrameOptions          string `yaml:"frame_options"`
	ContentTypeOptions    string `yaml:"content_type_options"`
	ReferrerPolicy        string `yaml:"referrer_policy"`
	ContentSecurityPolicy string `yaml:"content_security_policy"`
	HSTS                  string `yaml:"hsts"`
}

func (c *Config) validateAuth(v *validator) {
	a := c.Auth
	if a.JWTSecret != "" && len(a.JWTSecret) < 32 && !c.Production() {
		v.add("auth.jwt_secret", "is %d bytes; HS256 needs at least 32", len(a.JWTSecret))
	}
	for i, k := range a.PublicKeys {
		key := fmt.Sprintf("auth.public_keys[%d]", i)
		if (k.PEM == "") == (k.File == "") {
			v.add(key, "set either pem or file")
			continue
		}
		if _, err := k.load(); err != nil {
			v.add(key, "%v", err)
		}
	}
	if a.JWKSURL != "" && !absHTTP(a.JWKSURL) {
		v.add("auth.jwks_url", "%q is not an absolute http(s) URL", a.JWKSURL)
	}
	names := map[string]bool{}
	for i, k := range a.APIKeys {
		key := fmt.Sprintf("auth.api_keys[%d]", i)
		if k.Name == "" {
			v.add(key+".name", "is empty")
		} else if names[k.Name] {
			v.add(key+".name", "%q is used twice", k.Name)
		}
		names[k.Name] = true
		if len(k.KeySHA256) != 64 || strings.Trim(strings.ToLower(k.KeySHA256), "0123456789abcdef") != "" {
			v.add(key+".key_sha256", "must be 64 hex digits (sha256 of the key: printf %%s KEY | sha256sum)")
		}
	}
	cors := c.Security.CORS
	for i, o := range cors.AllowedOrigins {
		if o == "*" && cors.AllowCredentials {
			v.add(fmt.Sprintf("security.cors.allowed_origins[%d]", i), `"*" cannot be combined with allow_credentials`)
		}
	}
}

func (c *Config) hasAuthenticator() bool {
	a := c.Auth
	return a.JWTSecret != "" || len(a.PublicKeys) > 0 || a.JWKSURL != "" || len(a.APIKeys) > 0
}

func (k PublicKey) load() (crypto.PublicKey, error) {
	data := []byte(k.PEM)
	if k.File != "" {
		b, err := os.ReadFile(k.File)
		if err != nil {
			return nil, err
		}
		data = b
	}
	return authn.ParsePublicKeyPEM(data)
}

// authenticator builds the chain of authenticators the configuration
// describes: JWT (secret, public keys, JWKS), then API keys. It is nil
// when nothing is configured, which leaves only public routes reachable.
func (c *Config) authenticator() (authn.Authenticator, error) {
	a := c.Auth
	var chain []authn.Authenticator
	if a.JWTSecret != "" || len(a.PublicKeys) > 0 || a.JWKSURL != "" {
		s := authn.JWTSettings{
			JWKSURL:          a.JWKSURL,
			JWKSRefresh:      a.JWKSRefresh.D(),
			Algorithms:       a.JWTAlgorithms,
			Audience:         a.Audience,
			Leeway:           a.Leeway.D(),
			MaxTokenBytes:    a.MaxTokenBytes,
			RolesClaim:       a.Claims.Roles,
			PermissionsClaim: a.Claims.Permissions,
			TenantClaim:      a.Claims.Tenant,
			CacheSize:        a.CacheSize,
		}
		if a.JWTSecret != "" {
			s.Secret = []byte(a.JWTSecret)
		}
		for _, k := range a.PublicKeys {
			pk, err := k.load()
			if err != nil {
				return nil, err
			}
			if s.PublicKeys == nil {
				s.PublicKeys = map[string]crypto.PublicKey{}
			}
			s.PublicKeys[k.KID] = pk
		}
		for _, is := range a.Issuers {
			s.Issuers = append(s.Issuers, authn.IssuerSettings{Issuer: is.Issuer, Algorithms: is.Algorithms, Audience: is.Audience})
		}
		j, err := authn.NewJWT(s)
		if err != nil {
			return nil, err
		}
		chain = append(chain, j)
	}
	if len(a.APIKeys) > 0 {
		keys := make([]authn.APIKey, len(a.APIKeys))
		for i, k := range a.APIKeys {
			keys[i] = authn.APIKey{Name: k.Name, KeySHA256: strings.ToLower(k.KeySHA256), Roles: k.Roles, Permissions: k.Permissions, Tenant: k.Tenant}
		}
		ak, err := authn.NewAPIKeys(keys, a.APIKeyHeader)
		if err != nil {
			return nil, err
		}
		chain = append(chain, ak)
	}
	switch len(chain) {
	case 0:
		return nil, nil
	case 1:
		return chain[0], nil
	}
	return authn.Chain(chain...), nil
}

func (c *Config) edgeSettings() (gateway.CORSSettings, gateway.SecurityHeaders) {
	cors := c.Security.CORS
	h := c.Security.Headers
	return gateway.CORSSettings{
			AllowedOrigins: cors.AllowedOrigins, AllowedMethods: cors.AllowedMethods,
			AllowedHeaders: cors.AllowedHeaders, ExposedHeaders: cors.ExposedHeaders,
			AllowCredentials: cors.AllowCredentials, MaxAge: int(cors.MaxAge.D().Seconds()),
		}, gateway.SecurityHeaders{
			Disabled:     h.Enabled != nil && !*h.Enabled,
			FrameOptions: h.FrameOptions, ContentTypeOptions: h.ContentTypeOptions,
			ReferrerPolicy: h.ReferrerPolicy, ContentSecurityPolicy: h.ContentSecurityPolicy, HSTS: h.HSTS,
		}
}
