package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway/internal/gate"
)

// ProblemTypeBase is the prefix of every problem "type" URI the gateway
// emits; the README documents each one under the same anchor.
const ProblemTypeBase = "https://github.com/pyairtable/api-gateway#problem-"

// Problem is an RFC 9457 problem detail, plus the request id the gateway
// adds to every one so a client report can be matched to the logs.
type Problem struct {
	// Type is the short problem name ("no-route"); the emitted type is
	// ProblemTypeBase + Type.
	Type   string
	Title  string
	Status int
	Detail string
	// RetryAfter, when positive, is sent as a Retry-After header.
	RetryAfter time.Duration
}

// Problems the gateway itself produces.
var (
	ProblemNoRoute          = Problem{Type: "no-route", Title: "No route matches the request", Status: http.StatusNotFound}
	ProblemMethodNotAllowed = Problem{Type: "method-not-allowed", Title: "Method not allowed on this path", Status: http.StatusMethodNotAllowed}
	ProblemBadGateway       = Problem{Type: "bad-gateway", Title: "The backend could not be reached", Status: http.StatusBadGateway}
	ProblemUnavailable      = Problem{Type: "no-healthy-backend", Title: "No healthy backend is available", Status: http.StatusServiceUnavailable}
	ProblemTimeout          = Problem{Type: "backend-timeout", Title: "The backend did not answer in time", Status: http.StatusGatewayTimeout}
	ProblemBodyTooLarge     = Problem{Type: "body-too-large", Title: "Request body too large", Status: http.StatusRequestEntityTooLarge}
	ProblemBadRequest       = Problem{Type: "bad-request", Title: "Malformed request", Status: http.StatusBadRequest}
)

// errUpstreamTimeout is the cancellation cause set when a service timeout
// fires, so a deadline can be told from a client that went away.
var errUpstreamTimeout = errors.New("gateway: upstream timeout")

var (
	headerProblemJSON = []string{"application/problem+json"}
	headerNoStore     = []string{"no-store"}
	headerStrictCSP   = []string{"default-src 'none'; frame-ancestors 'none'"}
)

// WriteProblem writes p as application/problem+json with the request id of
// r (if the gateway assigned one). It is the one way errors reach clients.
func WriteProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	h := w.Header()
	h["Content-Type"] = headerProblemJSON
	h["Cache-Control"] = headerNoStore
	csp := headerStrictCSP
	if r != nil {
		if st := stateFrom(r.Context()); st != nil && st.edge != nil {
			csp = st.edge.csp
		}
	}
	if csp != nil {
		h["Content-Security-Policy"] = csp
	}
	h.Del("Content-Length")
	if p.RetryAfter > 0 {
		secs := int64((p.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	id := ""
	if r != nil {
		id = RequestID(r.Context())
	}
	buf := make([]byte, 0, 256)
	buf = append(buf, `{"type":`...)
	buf = strconv.AppendQuote(buf, ProblemTypeBase+p.Type)
	buf = append(buf, `,"title":`...)
	buf = appendJSONString(buf, p.Title)
	buf = append(buf, `,"status":`...)
	buf = strconv.AppendInt(buf, int64(p.Status), 10)
	if p.Detail != "" {
		buf = append(buf, `,"detail":`...)
		buf = appendJSONString(buf, p.Detail)
	}
	if id != "" {
		buf = append(buf, `,"request_id":`...)
		buf = appendJSONString(buf, id)
	}
	buf = append(buf, "}\n"...)
	w.WriteHeader(p.Status)
	w.Write(buf)
}

// problemFor maps an upstream error to the problem the client sees. ok is
// false when there is nobody to answer (the client went away).
func problemFor(r *http.Request, err error) (p Problem, ok bool) {
	var mbe *http.MaxBytesError
	var nre *unavailableError
	st := stateFrom(r.Context())
	if st != nil {
		if cp, ok := clientBodyProblem(st.body.err); ok {
			return cp, r.Context().Err() == nil || errors.Is(context.Cause(r.Context()), errUpstreamTimeout)
		}
	}
	switch {
	case errors.Is(err, errFallbackProblem) && st != nil && st.route != nil && st.route.fallbackProblem != nil:
		p = *st.route.fallbackProblem
	case errors.As(err, &mbe):
		p = ProblemBodyTooLarge
		p.Detail = "the request body exceeds the limit of " + strconv.FormatInt(mbe.Limit, 10) + " bytes"
	case errors.Is(err, errQueueTimeout):
		p = ProblemUnavailable
		p.Detail = "the service is at its concurrency limit; try again shortly"
		p.RetryAfter = time.Second
	case errors.Is(err, balancer.ErrNoInstance):
		p = ProblemUnavailable
		p.RetryAfter = time.Second
		if errors.As(err, &nre) && nre.retryAfter > 0 {
			p.RetryAfter = nre.retryAfter
		}
	case errors.Is(context.Cause(r.Context()), errUpstreamTimeout) || errors.Is(err, errUpstreamTimeout):
		p = ProblemTimeout
	case r.Context().Err() != nil:
		return Problem{}, false
	default:
		p = ProblemBadGateway
	}
	return p, true
}

// unavailableError is "no instance available", with a hint of when one may
// be (the soonest breaker reopening) for the Retry-After header.
type unavailableError struct {
	err        error
	retryAfter time.Duration
}

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// errQueueTimeout reports a request that waited its service's
// QueueTimeout for an instance slot: 503, try again later.
var errQueueTimeout = gate.ErrTimeout
