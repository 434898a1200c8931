package authn

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IssuerSettings configures one accepted token issuer. Like JWTSettings it
// is only read by NewJWT.
type IssuerSettings struct {
	// Issuer is the exact iss claim value. Required.
	Issuer string
	// Algorithms is this issuer's allow-list. If empty,
	// JWTSettings.Algorithms (or its default) is used.
	Algorithms []string
	// Audience, when set, requires the aud claim to hold one of these. If
	// empty, JWTSettings.Audience is used.
	Audience []string
}

// JWTSettings configures [NewJWT], which copies what it keeps: changing the
// struct, its slices or its map afterwards has no effect. The zero value is
// not usable: give at least a Secret, PublicKeys or a JWKSURL.
type JWTSettings struct {
	// Secret is the HMAC key for HS256/384/512. It must be at least as long
	// as the hash output (32 bytes for HS256, RFC 7518 §3.2). It may be empty
	// when only asymmetric keys are used.
	Secret []byte
	// PublicKeys maps a kid to an RSA (>= 2048 bits), ECDSA or Ed25519
	// public key, e.g. from [ParsePublicKeyPEM]. The key under "" verifies
	// tokens without a kid and tokens whose kid no other source knows.
	PublicKeys map[string]crypto.PublicKey
	// JWKSURL is a remote JSON Web Key Set. It must be https, or http on a
	// loopback address. Keys are fetched on first use (or by Run).
	JWKSURL string
	// JWKSRefresh is how long a fetched JWKS is used when the server sends
	// no Cache-Control max-age. If zero, 10m. A max-age is honoured between
	// 1s and 24h.
	JWKSRefresh time.Duration
	// JWKSUnknownKIDRateLimit is the least time between two refetches
	// caused by a token with an unknown kid, and the pause after a failed
	// fetch. If zero, 30s.
	JWKSUnknownKIDRateLimit time.Duration
	// Issuers lists the accepted issuers, each with its own algorithms and
	// audience; the token's iss picks one. If empty, any iss (or none) is
	// accepted with Algorithms and Audience.
	Issuers []IssuerSettings
	// Algorithms is the allow-list of JWS algorithms. If empty: HS256 when
	// Secret is set, plus RS256, ES256 and EdDSA when PublicKeys or
	// JWKSURL are set. "none" is always refused, and an HMAC algorithm is
	// never verified with an asymmetric key nor the reverse.
	Algorithms []string
	// Audience, when set, requires the aud claim to hold one of these.
	Audience []string
	// Leeway tolerates clock skew on exp, nbf and iat. If zero, 30s;
	// negative values are refused.
	Leeway time.Duration
	// MaxTokenBytes refuses longer tokens with Reason "too_large". If zero,
	// 8192.
	MaxTokenBytes int
	// RolesClaim, PermissionsClaim and TenantClaim name the claims mapped
	// onto the Principal. If empty, "roles", "permissions" and "tenant_id".
	// A dotted name such as "realm_access.roles" walks nested objects when
	// no top-level claim has that exact name. Roles and permissions may be
	// a JSON array of strings or a space-separated string (as OAuth scope).
	RolesClaim, PermissionsClaim, TenantClaim string
	// CacheSize bounds the verified-token cache. If zero, 10000; negative
	// disables the cache.
	CacheSize int
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
	// HTTPClient fetches the JWKS; idle connections of a given client are
	// the caller's to close. If nil, a client with 5s connect and 10s
	// overall timeouts that keeps no idle connections is used.
	HTTPClient *http.Client
	// Logger receives JWKS fetch failures. If nil, slog.Default().
	Logger *slog.Logger
}

// JWT authenticates `Authorization: Bearer <token>` requests carrying a JWS
// compact token. Tokens in the query string are deliberately ignored: they
// end up in access logs and Referer headers. The exp claim is required; nbf
// and iat are checked when present.
//
// A JWT is safe for concurrent use. It starts no goroutine; [JWT.Run]
// optionally refreshes the JWKS in the background.
type JWT struct {
	now      func() time.Time
	secret   []byte
	static   map[string]crypto.PublicKey
	jwks     *jwksSource
	single   *issuer            // set when no issuers are configured
	issuers  map[string]*issuer // by iss
	maxBytes int
	cache    *tokenCache

	rolesClaim, permissionsClaim, tenantClaim string
}

type issuer struct {
	algs   []string
	parser *jwt.Parser
}

// NewJWT validates s and returns a JWT. It refuses unknown algorithm names
// and "none", HMAC algorithms without a long enough Secret, asymmetric
// algorithms without PublicKeys or JWKSURL, unusable keys and plain-http
// JWKS URLs. It does no I/O and starts no goroutine.
func NewJWT(s JWTSettings) (*JWT, error) {
	if s.Leeway < 0 || s.MaxTokenBytes < 0 || s.JWKSRefresh < 0 || s.JWKSUnknownKIDRateLimit < 0 {
		return nil, fmt.Errorf("%w: negative Leeway, MaxTokenBytes, JWKSRefresh or JWKSUnknownKIDRateLimit", ErrInvalidSettings)
	}
	j := &JWT{
		now:              s.Now,
		maxBytes:         cmp.Or(s.MaxTokenBytes, 8192),
		rolesClaim:       cmp.Or(s.RolesClaim, "roles"),
		permissionsClaim: cmp.Or(s.PermissionsClaim, "permissions"),
		tenantClaim:      cmp.Or(s.TenantClaim, "tenant_id"),
	}
	if j.now == nil {
		j.now = time.Now
	}
	leeway := cmp.Or(s.Leeway, 30*time.Second)
	if len(s.Secret) > 0 {
		j.secret = bytes.Clone(s.Secret)
	}
	if len(s.PublicKeys) > 0 {
		j.static = make(map[string]crypto.PublicKey, len(s.PublicKeys))
		for kid, k := range s.PublicKeys {
			if err := checkPublicKey(k); err != nil {
				return nil, fmt.Errorf("PublicKeys[%q]: %w", kid, err)
			}
			j.static[kid] = k
		}
	}
	if s.JWKSURL != "" {
		if err := checkJWKSURL(s.JWKSURL); err != nil {
			return nil, err
		}
		j.jwks = &jwksSource{
			url:          s.JWKSURL,
			client:       s.HTTPClient,
			logger:       s.Logger,
			now:          j.now,
			refresh:      cmp.Or(s.JWKSRefresh, 10*time.Minute),
			unknownEvery: cmp.Or(s.JWKSUnknownKIDRateLimit, 30*time.Second),
			sem:          make(chan struct{}, 1),
		}
		if j.jwks.client == nil {
			j.jwks.client = defaultJWKSClient()
		}
		if j.jwks.logger == nil {
			j.jwks.logger = slog.Default()
		}
	}
	hasAsym := len(j.static) > 0 || j.jwks != nil
	if len(j.secret) == 0 && !hasAsym {
		return nil, fmt.Errorf("%w: no Secret, PublicKeys or JWKSURL", ErrInvalidSettings)
	}

	defAlgs := slices.Clone(s.Algorithms)
	if len(defAlgs) == 0 {
		if len(j.secret) > 0 {
			defAlgs = append(defAlgs, "HS256")
		}
		if hasAsym {
			defAlgs = append(defAlgs, "RS256", "ES256", "EdDSA")
		}
	}
	newIssuer := func(name string, algList, aud []string) (*issuer, error) {
		if len(algList) == 0 {
			algList = defAlgs
		}
		if err := j.checkAlgs(algList); err != nil {
			if name != "" {
				return nil, fmt.Errorf("issuer %q: %w", name, err)
			}
			return nil, err
		}
		if len(aud) == 0 {
			aud = s.Audience
		}
		opts := []jwt.ParserOption{
			jwt.WithValidMethods(slices.Clone(algList)),
			jwt.WithLeeway(leeway),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(j.now),
		}
		if name != "" {
			opts = append(opts, jwt.WithIssuer(name))
		}
		if len(aud) > 0 {
			opts = append(opts, jwt.WithAudience(slices.Clone(aud)...))
		}
		return &issuer{algs: slices.Clone(algList), parser: jwt.NewParser(opts...)}, nil
	}
	if len(s.Issuers) == 0 {
		is, err := newIssuer("", nil, nil)
		if err != nil {
			return nil, err
		}
		j.single = is
	} else {
		j.issuers = make(map[string]*issuer, len(s.Issuers))
		for i, is := range s.Issuers {
			if is.Issuer == "" {
				return nil, fmt.Errorf("%w: Issuers[%d] has no Issuer", ErrInvalidSettings, i)
			}
			if _, dup := j.issuers[is.Issuer]; dup {
				return nil, fmt.Errorf("%w: issuer %q listed twice", ErrInvalidSettings, is.Issuer)
			}
			parsed, err := newIssuer(is.Issuer, is.Algorithms, is.Audience)
			if err != nil {
				return nil, err
			}
			j.issuers[is.Issuer] = parsed
		}
	}
	if s.CacheSize >= 0 {
		j.cache = newTokenCache(cmp.Or(s.CacheSize, 10000))
	}
	return j, nil
}

func (j *JWT) checkAlgs(list []string) error {
	for _, a := range list {
		info, ok := algs[a]
		switch {
		case strings.EqualFold(a, "none"):
			return fmt.Errorf("%w: algorithm \"none\" is never accepted", ErrInvalidSettings)
		case !ok:
			return fmt.Errorf("%w: unknown algorithm %q", ErrInvalidSettings, a)
		case info.family == famHMAC && len(j.secret) == 0:
			return fmt.Errorf("%w: algorithm %s needs a Secret", ErrInvalidSettings, a)
		case info.family == famHMAC && len(j.secret) < info.minKey:
			return fmt.Errorf("%w: algorithm %s needs a Secret of at least %d bytes", ErrInvalidSettings, a, info.minKey)
		case info.family != famHMAC && len(j.static) == 0 && j.jwks == nil:
			return fmt.Errorf("%w: algorithm %s needs PublicKeys or JWKSURL", ErrInvalidSettings, a)
		}
	}
	return nil
}

// Run keeps the JWKS fresh until ctx is done, then returns nil. It fetches
// at once, then whenever the set expires (Cache-Control max-age, else
// JWKSRefresh); a failed fetch is retried after JWKSUnknownKIDRateLimit. It
// returns nil at once when no JWKSURL is configured, and an error if
// another Run is active. Run is optional: without it, the request that
// finds the set stale refreshes it.
func (j *JWT) Run(ctx context.Context) error {
	if j.jwks == nil {
		return nil
	}
	return j.jwks.run(ctx)
}

// Authenticate implements [Authenticator]. Requests without an
// Authorization header, or with a scheme other than Bearer, get
// ErrNoCredentials.
func (j *JWT) Authenticate(r *http.Request) (*Principal, error) {
	tok, err := bearerToken(r.Header, j.maxBytes)
	if err != nil {
		return nil, err
	}
	now := j.now()
	var gen uint64
	fresh := true
	if j.jwks != nil {
		// Read before verifying: if the keys change meanwhile, the entry is
		// born stale rather than outliving a revoked key. A stale key set
		// bypasses the cache so that the verification path refreshes it;
		// otherwise clients repeating cached tokens would never notice a
		// revoked key.
		sn := j.jwks.snap.Load()
		if sn != nil {
			gen = sn.gen
		}
		fresh = sn == nil || now.Before(sn.expires)
	}
	if j.cache != nil && fresh {
		if p := j.cache.get(tok, now.UnixNano(), gen); p != nil {
			return p, nil
		}
	}
	p, nbf, err := j.verify(r.Context(), tok, now)
	if err != nil {
		return nil, err
	}
	if j.cache == nil {
		return p, nil
	}
	if j.jwks != nil {
		// Cache only if the keys used are those of a known generation: the
		// one current before verifying, or the first set, fetched during it.
		g := j.jwks.gen()
		if g != gen && (gen != 0 || g != 1) {
			return p, nil
		}
		gen = g
	}
	if n, exp := now.UnixNano(), p.ExpiresAt.UnixNano(); n >= nbf && n < exp {
		j.cache.put(tok, p, nbf, exp, gen)
	}
	return p, nil
}

// bearerToken extracts the token of the single Authorization header.
func bearerToken(h http.Header, maxBytes int) (string, error) {
	vals := h["Authorization"]
	if len(vals) == 0 {
		return "", ErrNoCredentials
	}
	scheme, rest, _ := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ErrNoCredentials
	}
	if len(vals) > 1 {
		return "", unauthorized(ReasonMalformed, errors.New("several Authorization headers"))
	}
	tok := strings.TrimSpace(rest)
	switch {
	case tok == "":
		return "", unauthorized(ReasonMalformed, errors.New("empty bearer token"))
	case len(tok) > maxBytes:
		return "", unauthorized(ReasonTooLarge, fmt.Errorf("token of %d bytes exceeds %d", len(tok), maxBytes))
	}
	return tok, nil
}

// verify checks tok fully and returns its principal and nbf (unix ns, or
// MinInt64 when absent).
func (j *JWT) verify(ctx context.Context, tok string, now time.Time) (*Principal, int64, error) {
	is := j.single
	if is == nil {
		// The unverified iss only selects which settings verify the token;
		// the parser then checks iss again against that choice.
		name, err := unverifiedIssuer(tok)
		if err != nil {
			return nil, 0, unauthorized(ReasonMalformed, err)
		}
		if is = j.issuers[name]; is == nil {
			return nil, 0, unauthorized(ReasonBadIssuer, errors.New("issuer not configured"))
		}
	}
	claims := jwt.MapClaims{}
	token, err := is.parser.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		return j.key(ctx, now, t)
	})
	if err != nil {
		return nil, 0, classify(err, token, is)
	}
	return j.principal(claims)
}

func unverifiedIssuer(tok string) (string, error) {
	_, rest, ok1 := strings.Cut(tok, ".")
	payload, _, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return "", errors.New("token is not three dot-separated parts")
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", errors.New("payload is not base64url")
	}
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and "ISS" must not choose the issuer when the parser
	// will read "iss".
	var c map[string]json.RawMessage
	var iss string
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", errors.New("payload is not a JSON object")
	}
	if v, ok := c["iss"]; ok {
		if err := json.Unmarshal(v, &iss); err != nil {
			return "", errors.New("iss is not a string")
		}
	}
	return iss, nil
}

// classify maps a jwt/v5 error onto a Reason.
func classify(err error, token *jwt.Token, is *issuer) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if token != nil && token.Method != nil && !slices.Contains(is.algs, token.Method.Alg()) {
		return unauthorized(ReasonBadAlgorithm, err)
	}
	var r Reason
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		r = ReasonMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		r = ReasonBadAlgorithm // alg missing or not implemented
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		r = ReasonBadSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		r = ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		r = ReasonNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		r = ReasonBadIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		r = ReasonBadAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		r = ReasonMissingClaim
	default:
		r = ReasonMalformed // e.g. a claim of the wrong JSON type
	}
	return unauthorized(r, err)
}

// key is the jwt.Keyfunc. It picks key material by the token's alg family
// first, so that an HMAC token can only ever be checked against Secret and
// an asymmetric one only against a public key of the matching type.
func (j *JWT) key(ctx context.Context, now time.Time, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	var kid string
	if v, ok := t.Header["kid"]; ok {
		s, ok := v.(string)
		if !ok {
			return nil, unauthorized(ReasonMalformed, errors.New("kid is not a string"))
		}
		kid = s
	}
	if algs[alg].family == famHMAC {
		// The classic confusion attack signs HS256 with the RSA public key
		// bytes and names that key's kid; refuse it outright.
		if kid != "" && (j.static[kid] != nil || j.jwks != nil && j.jwks.has(ctx, kid)) {
			return nil, unauthorized(ReasonBadAlgorithm, errors.New("HMAC alg with the kid of an asymmetric key"))
		}
		if len(j.secret) == 0 {
			return nil, unauthorized(ReasonBadAlgorithm, errors.New("HMAC alg without a secret"))
		}
		return j.secret, nil
	}
	if k, ok := j.static[kid]; ok {
		return fitting(alg, k)
	}
	if j.jwks != nil {
		k, err := j.jwks.key(ctx, now, t, kid)
		var e *Error
		if err == nil || !errors.As(err, &e) || e.Reason != ReasonUnknownKey || j.static[""] == nil {
			return k, err
		}
	}
	if k, ok := j.static[""]; ok {
		return fitting(alg, k)
	}
	return nil, unauthorized(ReasonUnknownKey, errors.New("no key for kid"))
}

func fitting(alg string, k crypto.PublicKey) (any, error) {
	if !keyFits(alg, k) {
		return nil, unauthorized(ReasonBadAlgorithm, fmt.Errorf("alg %s does not fit the key", alg))
	}
	return k, nil
}

func (j *JWT) principal(c jwt.MapClaims) (*Principal, int64, error) {
	p := &Principal{Method: MethodJWT}
	var err error
	if p.Subject, err = stringClaim(c, "sub"); err != nil {
		return nil, 0, err
	}
	if p.Issuer, err = stringClaim(c, "iss"); err != nil {
		return nil, 0, err
	}
	if p.Tenant, err = stringClaim(c, j.tenantClaim); err != nil {
		return nil, 0, err
	}
	if p.Roles, err = stringsClaim(c, j.rolesClaim); err != nil {
		return nil, 0, err
	}
	if p.Permissions, err = stringsClaim(c, j.permissionsClaim); err != nil {
		return nil, 0, err
	}
	// The parser has already required exp and type-checked exp and nbf.
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, 0, unauthorized(ReasonMissingClaim, errors.New("exp claim"))
	}
	p.ExpiresAt = exp.Time
	nbf := int64(math.MinInt64)
	if t, err := c.GetNotBefore(); err == nil && t != nil {
		nbf = t.UnixNano()
	}
	return p, nbf, nil
}

func lookupClaim(c jwt.MapClaims, name string) (any, bool) {
	if v, ok := c[name]; ok {
		return v, true
	}
	if !strings.Contains(name, ".") {
		return nil, false
	}
	var cur any = map[string]any(c)
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func stringClaim(c jwt.MapClaims, name string) (string, error) {
	v, ok := lookupClaim(c, name)
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", unauthorized(ReasonMalformed, fmt.Errorf("claim %q is not a string", name))
	}
	return s, nil
}

func stringsClaim(c jwt.MapClaims, name string) ([]string, error) {
	v, ok := lookupClaim(c, name)
	if !ok || v == nil {
		return nil, nil
	}
	switch t := v.(type) {
	case string:
		return strings.Fields(t), nil
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, unauthorized(ReasonMalformed, fmt.Errorf("claim %q holds a non-string", name))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, unauthorized(ReasonMalformed, fmt.Errorf("claim %q is neither a string nor an array", name))
}
