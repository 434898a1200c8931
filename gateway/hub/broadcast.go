package hub

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// MaxBroadcastBody is the largest request body BroadcastHandler accepts.
const MaxBroadcastBody = 1 << 20

// BroadcastHandler returns the HTTP endpoint through which services
// broadcast: POST {"channel":"…","data":<any JSON>} answers 202 Accepted
// once the message is published (handed to the backplane, or queued for
// local subscribers). Failures are application/problem+json: 401 when
// apiKeyCheck refuses the request, 405 for other methods, 400 for a
// malformed body, unknown fields, an invalid channel or missing data, 413
// for a body over MaxBroadcastBody, 503 when the hub is shut down or the
// backplane fails.
//
// apiKeyCheck authenticates the caller (compare keys in constant time); it
// is required: pass a function returning true to rely on middleware.
func (h *Hub) BroadcastHandler(apiKeyCheck func(r *http.Request) bool) http.Handler {
	if apiKeyCheck == nil {
		panic("hub: BroadcastHandler needs an apiKeyCheck")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !apiKeyCheck(r) {
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "Missing or invalid API key", "")
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeProblem(w, http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed on this path", "")
			return
		}
		var req struct {
			Channel string          `json:"channel"`
			Data    json.RawMessage `json:"data"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBroadcastBody))
		dec.DisallowUnknownFields()
		err := dec.Decode(&req)
		if err == nil && dec.Decode(&struct{}{}) != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
		if err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				writeProblem(w, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large", "")
				return
			}
			writeProblem(w, http.StatusBadRequest, "bad-request", "Malformed request", err.Error())
			return
		}
		if !ValidChannel(req.Channel) {
			writeProblem(w, http.StatusBadRequest, "bad-request", "Malformed request", "invalid channel name")
			return
		}
		if len(req.Data) == 0 {
			writeProblem(w, http.StatusBadRequest, "bad-request", "Malformed request", "data is required")
			return
		}
		if err := h.Publish(r.Context(), req.Channel, req.Data); err != nil {
			if errors.Is(err, ErrClosed) {
				writeProblem(w, http.StatusServiceUnavailable, "shutting-down", "The gateway is shutting down", "")
				return
			}
			h.log.Error("hub: broadcast failed", "channel", req.Channel, "err", err)
			writeProblem(w, http.StatusServiceUnavailable, "broadcast-failed", "The broadcast could not be published", "")
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// problemTypeBase matches the gateway's problem type URIs (package gateway
// cannot be imported from here).
const problemTypeBase = "https://github.com/pyairtable/api-gateway#problem-"

// writeProblem writes an RFC 9457 problem detail.
func writeProblem(w http.ResponseWriter, status int, typ, title, detail string) {
	body, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{problemTypeBase + typ, title, status, detail})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/problem+json")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
