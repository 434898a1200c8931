package hub

import "strconv"

// EventKind says what an [Event] reports.
type EventKind uint8

const (
	// EventConnected: a WebSocket connection was upgraded.
	EventConnected EventKind = iota + 1
	// EventRefused: a connection was refused before or just after auth;
	// Reason is "origin", "ip_limit", "user_limit" or "shutting_down".
	EventRefused
	// EventAuthenticated: a client authenticated.
	EventAuthenticated
	// EventAuthFailed: a client was closed with 4401; Reason is
	// "timeout", "protocol" (first message not a valid auth message) or
	// "invalid" (Verify failed).
	EventAuthFailed
	// EventDisconnected: a connection ended, for whatever reason; Count
	// is the number of subscriptions it held.
	EventDisconnected
	// EventSubscribed: a client subscribed to Channel.
	EventSubscribed
	// EventUnsubscribed: a client unsubscribed from Channel (explicitly;
	// disconnects are reported by EventDisconnected alone).
	EventUnsubscribed
	// EventForbidden: Authorize refused a subscription to Channel.
	EventForbidden
	// EventMessageIn: a message was read from a client.
	EventMessageIn
	// EventBroadcast: a broadcast on Channel was queued for Count local
	// subscribers.
	EventBroadcast
	// EventDropped: a client was dropped because its send queue
	// overflowed.
	EventDropped
)

var eventNames = [...]string{
	EventConnected:     "connected",
	EventRefused:       "refused",
	EventAuthenticated: "authenticated",
	EventAuthFailed:    "auth_failed",
	EventDisconnected:  "disconnected",
	EventSubscribed:    "subscribed",
	EventUnsubscribed:  "unsubscribed",
	EventForbidden:     "forbidden",
	EventMessageIn:     "message_in",
	EventBroadcast:     "broadcast",
	EventDropped:       "dropped",
}

// String returns the kind's snake_case name, suitable as a metrics label.
func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one thing that happened in a hub, reported to Settings.OnEvent
// for metrics. It carries no identity or address, so that it can be
// counted without leaking who the clients are.
type Event struct {
	Kind EventKind
	// Channel is set for subscription and broadcast events.
	Channel string
	// Count is the number of subscribers reached by EventBroadcast.
	Count int
	// Reason qualifies EventRefused and EventAuthFailed.
	Reason string
}
