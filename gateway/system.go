package gateway

import (
	"encoding/json"
	"net/http"
	"time"
)

var (
	headerJSON   = []string{"application/json"}
	bodyHealthOK = []byte(`{"status":"ok"}` + "\n")
	bodyReady    = []byte(`{"status":"ready"}` + "\n")
	bodyNotReady = []byte(`{"status":"not_ready"}` + "\n")
	bodyDraining = []byte(`{"status":"draining"}` + "\n")
)

// System endpoints. They are answered before routing, never proxied, and
// never rate limited or authenticated.
const (
	PathHealth         = "/health"
	PathLive           = "/live"
	PathReady          = "/ready"
	PathHealthDetailed = "/health/detailed"
	PathMetrics        = "/metrics"
)

// serveSystem answers the gateway's own endpoints and reports whether it
// did. It is on every request's path, so it decides with one length check
// in the common case.
func (g *Gateway) serveSystem(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if len(p) < 5 || len(p) > len(PathHealthDetailed) || (p[1] != 'h' && p[1] != 'l' && p[1] != 'r' && p[1] != 'm') {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	switch p {
	case PathHealth, PathLive:
		writeStatic(w, http.StatusOK, bodyHealthOK)
	case PathReady:
		switch {
		case g.draining.Load():
			writeStatic(w, http.StatusServiceUnavailable, bodyDraining)
		case !g.ready.Load():
			writeStatic(w, http.StatusServiceUnavailable, bodyNotReady)
		default:
			writeStatic(w, http.StatusOK, bodyReady)
		}
	case PathHealthDetailed:
		g.serveDetailed(w)
	case PathMetrics:
		if g.metricsHandler == nil {
			return false
		}
		g.metricsHandler.ServeHTTP(w, r)
	default:
		return false
	}
	return true
}

func writeStatic(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	h["Content-Type"] = headerJSON
	h["Cache-Control"] = headerNoStore
	w.WriteHeader(code)
	w.Write(body)
}

// SetReady marks the gateway ready (or not) for /ready. Serve does this
// itself; embedders that run their own http.Server call it once listening.
func (g *Gateway) SetReady(ready bool) { g.ready.Store(ready) }

// Detailed is the document served at /health/detailed.
type Detailed struct {
	Status     string          `json:"status"`
	Version    string          `json:"version,omitempty"`
	Uptime     string          `json:"uptime"`
	Generation int64           `json:"config_generation"`
	InFlight   int64           `json:"in_flight"`
	LastReload *ReloadStatus   `json:"last_reload,omitempty"`
	Services   []ServiceHealth `json:"services"`
}

// ServiceHealth describes one service in /health/detailed.
type ServiceHealth struct {
	Name      string           `json:"name"`
	Status    string           `json:"status"` // "up", "degraded" or "down"
	Available int              `json:"available"`
	Total     int              `json:"total"`
	Instances []InstanceHealth `json:"instances"`
}

// InstanceHealth describes one instance in /health/detailed.
type InstanceHealth struct {
	URL      string `json:"url"`
	State    string `json:"state"`
	Weight   int    `json:"weight"`
	InFlight int64  `json:"in_flight"`
	// Queued counts requests waiting for one of the instance's
	// MaxConnsPerInstance slots.
	Queued    int     `json:"queued"`
	Requests  uint64  `json:"requests"`
	Failures  uint64  `json:"failures"`
	LatencyMS float64 `json:"latency_ms"`
	ErrorRate float64 `json:"error_rate"`
}

// Health returns the gateway's detailed health.
func (g *Gateway) Health() Detailed {
	t := g.tbl.Load()
	d := Detailed{
		Status:     "ok",
		Version:    g.version,
		Uptime:     g.now().Sub(g.started).Round(time.Second).String(),
		Generation: g.generation.Load(),
		InFlight:   g.inflight.Load(),
	}
	if g.draining.Load() {
		d.Status = "draining"
	}
	d.LastReload = g.reload.Load()
	for _, name := range t.names {
		svc := t.services[name]
		m := svc.m.Load()
		pool := m.pool
		sh := ServiceHealth{Name: name, Total: len(pool)}
		for _, in := range pool {
			if in.Available() {
				sh.Available++
			}
			queued := 0
			if gt := m.gates[in]; gt != nil {
				_, queued = gt.Load()
			}
			sh.Instances = append(sh.Instances, InstanceHealth{
				Queued:    queued,
				URL:       in.URL.String(),
				State:     in.Flags().String(),
				Weight:    in.Weight,
				InFlight:  in.InFlight(),
				Requests:  in.Requests(),
				Failures:  in.Failures(),
				LatencyMS: float64(in.Latency().Microseconds()) / 1000,
				ErrorRate: in.ErrorRate(),
			})
		}
		switch {
		case sh.Available == sh.Total:
			sh.Status = "up"
		case sh.Available == 0:
			sh.Status = "down"
		default:
			sh.Status = "degraded"
		}
		d.Services = append(d.Services, sh)
	}
	return d
}

func (g *Gateway) serveDetailed(w http.ResponseWriter) {
	b, err := json.MarshalIndent(g.Health(), "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeStatic(w, http.StatusOK, append(b, '\n'))
}

// ReloadStatus is the outcome of the last configuration reload.
type ReloadStatus struct {
	Time          time.Time `json:"time"`
	OK            bool      `json:"ok"`
	Error         string    `json:"error,omitempty"`
	RestartNeeded []string  `json:"restart_needed,omitempty"`
}

// SetReloadStatus records the outcome of a reload for /health/detailed.
func (g *Gateway) SetReloadStatus(s ReloadStatus) { g.reload.Store(&s) }
