package authn

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// APIKey is one configured key. Only its SHA-256 is configured, so that the
// gateway configuration does not hold usable secrets. NewAPIKeys copies what
// it keeps.
type APIKey struct {
	// Name identifies the key in logs and becomes the principal's Subject
	// and KeyName. Required and unique.
	Name string
	// KeySHA256 is the hex SHA-256 of the key (see [HashAPIKey]).
	KeySHA256   string
	Roles       []string
	Permissions []string
	Tenant      string
}

// maxAPIKeyBytes bounds what is hashed per request.
const maxAPIKeyBytes = 1024

// APIKeys authenticates requests by a key in a header. It is safe for
// concurrent use and immutable after construction.
type APIKeys struct {
	header     string
	hashes     [][sha256.Size]byte
	principals []*Principal
}

// HashAPIKey returns the hex SHA-256 of key, the form [APIKey.KeySHA256]
// expects.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// NewAPIKeys returns an authenticator for keys presented in header (if
// empty, "X-API-Key"). It refuses an empty list, missing or duplicate names,
// and hashes that are not 64 hex digits or appear twice.
func NewAPIKeys(keys []APIKey, header string) (*APIKeys, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no API keys", ErrInvalidSettings)
	}
	if header == "" {
		header = "X-API-Key"
	}
	a := &APIKeys{
		header:     textproto.CanonicalMIMEHeaderKey(header),
		hashes:     make([][sha256.Size]byte, len(keys)),
		principals: make([]*Principal, len(keys)),
	}
	names := make(map[string]bool, len(keys))
	for i, k := range keys {
		if k.Name == "" {
			return nil, fmt.Errorf("%w: API key %d has no name", ErrInvalidSettings, i)
		}
		if names[k.Name] {
			return nil, fmt.Errorf("%w: API key name %q used twice", ErrInvalidSettings, k.Name)
		}
		names[k.Name] = true
		raw, err := hex.DecodeString(strings.TrimSpace(k.KeySHA256))
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("%w: API key %q: KeySHA256 must be 64 hex digits", ErrInvalidSettings, k.Name)
		}
		copy(a.hashes[i][:], raw)
		if j := slices.Index(a.hashes[:i], a.hashes[i]); j >= 0 {
			return nil, fmt.Errorf("%w: API keys %q and %q have the same hash", ErrInvalidSettings, keys[j].Name, k.Name)
		}
		a.principals[i] = &Principal{
			Subject:     k.Name,
			Roles:       slices.Clone(k.Roles),
			Permissions: slices.Clone(k.Permissions),
			Tenant:      k.Tenant,
			Method:      MethodAPIKey,
			KeyName:     k.Name,
		}
	}
	return a, nil
}

// Authenticate implements [Authenticator]. Without the header it returns
// ErrNoCredentials. The SHA-256 of the presented key is compared in constant
// time with every configured hash, without stopping at a match, so timing
// reveals neither whether nor which key matched. The returned Principal is
// shared by all requests with that key.
func (a *APIKeys) Authenticate(r *http.Request) (*Principal, error) {
	vals := r.Header[a.header]
	if len(vals) == 0 || vals[0] == "" {
		return nil, ErrNoCredentials
	}
	if len(vals) > 1 {
		return nil, unauthorized(ReasonBadAPIKey, errors.New("several API key headers"))
	}
	key := vals[0]
	if len(key) > maxAPIKeyBytes {
		return nil, unauthorized(ReasonTooLarge, errors.New("API key too long"))
	}
	// A stack buffer keeps the []byte conversion from allocating.
	var buf [maxAPIKeyBytes]byte
	sum := sha256.Sum256(buf[:copy(buf[:], key)])
	found, idx := 0, 0
	for i := range a.hashes {
		eq := subtle.ConstantTimeCompare(sum[:], a.hashes[i][:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
		found |= eq
	}
	if found == 0 {
		return nil, unauthorized(ReasonBadAPIKey, nil)
	}
	return a.principals[idx], nil
}
