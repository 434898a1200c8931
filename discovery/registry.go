package discovery

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// RegistrySettings configures a [Registry].
type RegistrySettings struct {
	// APIKey is the admin key callers present in X-Admin-Key or as
	// "Authorization: Bearer <key>". If empty, every call is refused with
	// 403: the registry denies by default.
	APIKey string
	// DefaultTTL is how long a registration lives without a heartbeat when
	// the caller gives no ttl. If zero, 30s is used.
	DefaultTTL time.Duration
	// MaxTTL caps the ttl a caller may ask for. If zero, 5m is used.
	MaxTTL time.Duration
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time
}

// minTTL keeps callers from asking for TTLs shorter than Run's resolution.
const minTTL = time.Second

// expireEvery is how often Run looks for lapsed registrations.
const expireEvery = time.Second

// Registry is an HTTP registration endpoint, usually mounted on the admin
// port. Instances register themselves with a TTL, heartbeat by registering
// again, and drop out when they deregister or stop heartbeating:
//
//	POST   /registry/services/{name}/instances  {"url": "http://10.0.0.7:8080", "weight": 1, "ttl": "30s"}
//	       → 201 Created (new) or 200 OK (heartbeat), with the stored registration
//	DELETE /registry/services/{name}/instances  {"url": "..."} or ?url=...  → 204 (also when absent)
//	GET    /registry/services/{name}/instances  → 200 with the current list
//
// Every call, reads included, needs the admin key (the list reveals internal
// addresses). Errors are RFC 9457 application/problem+json documents.
//
// Lapsed registrations are removed by [Registry.Run], or by calling
// [Registry.Expire] (handlers call it too, so reads are always current).
// [Registry.Source] turns a service's registrations into a [Source].
//
// All methods are safe for concurrent use.
type Registry struct {
	key        [sha256.Size]byte
	hasKey     bool
	defaultTTL time.Duration
	maxTTL     time.Duration
	now        func() time.Time

	mu       sync.Mutex
	services map[string]*service
}

// service is the registrations of one service name. changed is closed and
// replaced whenever the endpoint set changes, waking every watcher at once
// without a subscriber list to maintain.
type service struct {
	regs    map[string]*registration
	changed chan struct{}
}

type registration struct {
	ep      Endpoint
	ttl     time.Duration
	expires time.Time
}

// NewRegistry returns a registry configured by s.
func NewRegistry(s RegistrySettings) *Registry {
	r := &Registry{
		defaultTTL: cmp.Or(s.DefaultTTL, 30*time.Second),
		maxTTL:     cmp.Or(s.MaxTTL, 5*time.Minute),
		now:        s.Now,
		services:   make(map[string]*service),
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.maxTTL = max(r.maxTTL, minTTL)
	r.defaultTTL = min(max(r.defaultTTL, minTTL), r.maxTTL)
	if s.APIKey != "" {
		// Comparing fixed-size digests keeps the comparison constant-time
		// in the key's length too.
		r.key, r.hasKey = sha256.Sum256([]byte(s.APIKey)), true
	}
	return r
}

// Run removes lapsed registrations every second until ctx is done, then
// returns ctx.Err().
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(expireEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			r.Expire(r.now())
		}
	}
}

// Expire removes the registrations whose TTL lapsed at now and wakes the
// watchers of the services that changed. It returns how many it removed.
func (r *Registry) Expire(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, svc := range r.services {
		removed := false
		for u, reg := range svc.regs {
			if !now.Before(reg.expires) {
				delete(svc.regs, u)
				removed = true
				n++
			}
		}
		if removed {
			svc.notify()
		}
	}
	return n
}

// svc returns the named service, creating it. r.mu must be held.
func (r *Registry) svc(name string) *service {
	s := r.services[name]
	if s == nil {
		s = &service{regs: make(map[string]*registration), changed: make(chan struct{})}
		r.services[name] = s
	}
	return s
}

func (s *service) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// snapshot returns the service's sorted endpoint set. r.mu must be held.
func (s *service) snapshot() []Endpoint {
	eps := make([]Endpoint, 0, len(s.regs))
	for _, reg := range s.regs {
		eps = append(eps, reg.ep)
	}
	slices.SortFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.URL, b.URL) })
	return clone(eps)
}

// Source returns a [Source] that delivers the registrations of the named
// service. The service need not be registered yet: its set starts empty.
func (r *Registry) Source(name string) Source { return &registrySource{r: r, name: name} }

type registrySource struct {
	r    *Registry
	name string
}

func (s *registrySource) Watch(ctx context.Context, ch chan<- []Endpoint) error {
	var last []Endpoint
	sent := false
	for {
		s.r.mu.Lock()
		svc := s.r.svc(s.name)
		eps, changed := svc.snapshot(), svc.changed
		s.r.mu.Unlock()
		if !sent || !equal(eps, last) {
			if !send(ctx, ch, eps) {
				return ctx.Err()
			}
			last, sent = clone(eps), true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// registrationBody is the JSON accepted by POST and DELETE.
type registrationBody struct {
	URL    string            `json:"url"`
	Weight int               `json:"weight,omitempty"`
	TTL    string            `json:"ttl,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
}

// registrationView is the JSON the registry answers with.
type registrationView struct {
	URL     string            `json:"url"`
	Weight  int               `json:"weight"`
	TTL     string            `json:"ttl"`
	Expires time.Time         `json:"expires"`
	Meta    map[string]string `json:"meta,omitempty"`
}

const (
	pathPrefix = "/registry/services/"
	pathSuffix = "/instances"
	maxBody    = 64 << 10
)

// ServeHTTP implements http.Handler.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.hasKey {
		problem(w, http.StatusForbidden, "the registry is disabled: no admin API key is configured")
		return
	}
	if !r.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="registry"`)
		problem(w, http.StatusUnauthorized, "a valid admin API key is required (X-Admin-Key or Authorization: Bearer)")
		return
	}
	name, ok := serviceName(req.URL.Path)
	if !ok {
		problem(w, http.StatusNotFound, "no such registry resource; use /registry/services/{name}/instances")
		return
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		r.list(w, name)
	case http.MethodPost:
		r.register(w, req, name)
	case http.MethodDelete:
		r.deregister(w, req, name)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
		problem(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed here", req.Method))
	}
}

// authorized checks the presented key in constant time.
func (r *Registry) authorized(req *http.Request) bool {
	key := req.Header.Get("X-Admin-Key")
	if key == "" {
		auth := req.Header.Get("Authorization")
		if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
			key = strings.TrimSpace(auth[7:])
		}
	}
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare(sum[:], r.key[:]) == 1
}

// serviceName extracts {name} from /registry/services/{name}/instances.
func serviceName(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, pathPrefix)
	if !ok {
		return "", false
	}
	name, ok := strings.CutSuffix(rest, pathSuffix)
	if !ok || name == "" || len(name) > 128 {
		return "", false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", false
		}
	}
	return name, true
}

func (r *Registry) list(w http.ResponseWriter, name string) {
	now := r.now()
	r.Expire(now)
	r.mu.Lock()
	views := []registrationView{}
	if svc := r.services[name]; svc != nil {
		for _, reg := range svc.regs {
			views = append(views, view(reg))
		}
	}
	r.mu.Unlock()
	slices.SortFunc(views, func(a, b registrationView) int { return strings.Compare(a.URL, b.URL) })
	writeJSON(w, http.StatusOK, views)
}

func view(reg *registration) registrationView {
	return registrationView{URL: reg.ep.URL, Weight: reg.ep.Weight, TTL: reg.ttl.String(), Expires: reg.expires.UTC(), Meta: reg.ep.Meta}
}

func decodeBody(w http.ResponseWriter, req *http.Request, into *registrationBody) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	return nil
}

func (r *Registry) register(w http.ResponseWriter, req *http.Request, name string) {
	var body registrationBody
	if err := decodeBody(w, req, &body); err != nil {
		problem(w, http.StatusBadRequest, err.Error())
		return
	}
	ttl := r.defaultTTL
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil || d <= 0 {
			problem(w, http.StatusBadRequest, fmt.Sprintf("ttl %q is not a positive duration such as \"30s\"", body.TTL))
			return
		}
		ttl = min(max(d, minTTL), r.maxTTL)
	}
	eps, err := normalize([]Endpoint{{URL: body.URL, Weight: body.Weight, Meta: body.Meta}})
	if err != nil {
		problem(w, http.StatusBadRequest, err.Error())
		return
	}
	ep := eps[0]
	now := r.now()
	r.Expire(now)

	r.mu.Lock()
	svc := r.svc(name)
	reg, existed := svc.regs[ep.URL]
	if !existed || !equal([]Endpoint{reg.ep}, eps) {
		svc.notify() // a heartbeat that changes nothing wakes nobody
	}
	reg = &registration{ep: ep, ttl: ttl, expires: now.Add(ttl)}
	svc.regs[ep.URL] = reg
	v := view(reg)
	r.mu.Unlock()

	status := http.StatusOK
	if !existed {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}

func (r *Registry) deregister(w http.ResponseWriter, req *http.Request, name string) {
	raw := req.URL.Query().Get("url")
	if raw == "" {
		var body registrationBody
		if err := decodeBody(w, req, &body); err != nil {
			problem(w, http.StatusBadRequest, err.Error())
			return
		}
		raw = body.URL
	}
	u, err := canonicalURL(raw)
	if err != nil {
		problem(w, http.StatusBadRequest, err.Error())
		return
	}
	r.mu.Lock()
	if svc := r.services[name]; svc != nil {
		if _, ok := svc.regs[u]; ok {
			delete(svc.regs, u)
			svc.notify()
		}
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// problem writes an RFC 9457 problem document.
func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{"about:blank", http.StatusText(status), status, detail})
}
