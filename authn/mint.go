package authn

import (
	"cmp"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintClaims describes a token for [MintHS256]; it is a plain value.
type MintClaims struct {
	Subject     string
	Roles       []string // "roles" claim
	Permissions []string // "permissions" claim
	Tenant      string   // "tenant_id" claim
	Issuer      string
	Audience    []string
	// TTL is the lifetime from IssuedAt to exp. If zero, 15m.
	TTL time.Duration
	// IssuedAt is the iat claim. If zero, time.Now().
	IssuedAt time.Time
	// KeyID, when set, becomes the kid header.
	KeyID string
}

// MintHS256 signs an HS256 token with the default claim names of
// [JWTSettings]. It is meant for the `api-gateway token` development command
// and tests, not as an identity provider. secret must be at least 32 bytes.
func MintHS256(secret []byte, c MintClaims) (string, error) {
	if len(secret) < algs["HS256"].minKey {
		return "", fmt.Errorf("%w: HS256 secret must be at least %d bytes", ErrInvalidSettings, algs["HS256"].minKey)
	}
	if c.TTL < 0 {
		return "", fmt.Errorf("%w: negative TTL", ErrInvalidSettings)
	}
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	claims := jwt.MapClaims{
		"iat": iat.Unix(),
		"exp": iat.Add(cmp.Or(c.TTL, 15*time.Minute)).Unix(),
	}
	set := func(k string, v any, ok bool) {
		if ok {
			claims[k] = v
		}
	}
	set("sub", c.Subject, c.Subject != "")
	set("iss", c.Issuer, c.Issuer != "")
	set("aud", c.Audience, len(c.Audience) > 0)
	set("roles", c.Roles, len(c.Roles) > 0)
	set("permissions", c.Permissions, len(c.Permissions) > 0)
	set("tenant_id", c.Tenant, c.Tenant != "")
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	if c.KeyID != "" {
		t.Header["kid"] = c.KeyID
	}
	return t.SignedString(secret)
}
