package hub

import (
	"net/http"
	"net/url"
	"strings"
)

// MaxChannelLen is the longest channel name ValidChannel accepts.
const MaxChannelLen = 200

// ValidChannel reports whether name can be a channel: 1 to MaxChannelLen
// bytes of printable ASCII other than space, '"' and '\'. The restriction
// lets envelopes embed the name without JSON escaping, and keeps names
// unambiguous in logs and metrics.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if b <= ' ' || b > '~' || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// DefaultAuthorize is the channel policy used when Settings.Authorize is
// nil. It denies by default and allows:
//
//   - "public:…" to anyone authenticated;
//   - "user:<subject>" to that subject only (the whole rest of the name
//     must equal the subject);
//   - "tenant:<tenant>:…" to members of that tenant;
//   - "role:<role>:…" to holders of that role.
//
// An empty subject, tenant or role matches nothing, and neither does a
// tenant or role containing ':' — otherwise tenant "a" would also match the
// channels of a tenant named "a:b".
func DefaultAuthorize(id Identity, channel string) bool {
	kind, rest, ok := strings.Cut(channel, ":")
	if !ok {
		return false
	}
	switch kind {
	case "public":
		return true
	case "user":
		return id.Subject != "" && rest == id.Subject
	case "tenant":
		return scopeMatches(id.Tenant, rest)
	case "role":
		for _, role := range id.Roles {
			if scopeMatches(role, rest) {
				return true
			}
		}
	}
	return false
}

// scopeMatches reports whether rest is "<scope>:…".
func scopeMatches(scope, rest string) bool {
	return scope != "" && !strings.Contains(scope, ":") &&
		len(rest) > len(scope) && rest[len(scope)] == ':' && rest[:len(scope)] == scope
}

// SameOrigin is the default Settings.CheckOrigin: it allows requests
// without an Origin header (browsers always send one; other clients are not
// exposed to cross-site WebSocket hijacking) and requests whose Origin host
// equals the Host header, ignoring case.
func SameOrigin(r *http.Request) bool {
	origin := r.Header["Origin"]
	if len(origin) == 0 {
		return true
	}
	u, err := url.Parse(origin[0])
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}
