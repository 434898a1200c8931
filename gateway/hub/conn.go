package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// closeWait is how long the hub waits for a client to answer its close
// frame before dropping the connection. Closing at once could reset a
// connection with unread input, and the client would lose the close frame
// and its code.
const closeWait = time.Second

// client is one WebSocket connection. Its reader (readLoop, then serve) owns
// id, userKey and subs; mu guards the send queue and the closed flag.
type client struct {
	h    *Hub
	conn *websocket.Conn
	ip   string

	id      Identity
	userKey string // set once counted in h.perUser
	subs    map[string]struct{}

	mu      sync.Mutex
	queue   []*websocket.PreparedMessage
	spare   []*websocket.PreparedMessage // the writer's previous batch, reused
	writing bool                         // a writer goroutine is running
	closed  bool                         // accepts no more sends or kills
	ping    *time.Timer

	// dead mirrors closed for lock-free checks between writes and before
	// extending read deadlines.
	dead atomic.Bool
}

// hijacker lets gorilla, which asserts http.Hijacker directly, upgrade
// through middleware wrappers that only expose Unwrap.
type hijacker struct{ http.ResponseWriter }

func (w hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// ServeHTTP upgrades r to a WebSocket connection served by the hub. It
// returns once the connection is set up; the connection lives on in its own
// goroutine, so the request's middleware stack and buffers are freed.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.checkOrigin(r) {
		h.emit(Event{Kind: EventRefused, Reason: "origin"})
		writeProblem(w, http.StatusForbidden, "origin-not-allowed", "Origin not allowed", "")
		return
	}
	ip := h.clientIP(r)
	h.mu.Lock()
	switch {
	case h.closing:
		h.mu.Unlock()
		h.emit(Event{Kind: EventRefused, Reason: "shutting_down"})
		writeProblem(w, http.StatusServiceUnavailable, "shutting-down", "The gateway is shutting down", "")
		return
	case h.maxPerIP > 0 && h.perIP[ip] >= h.maxPerIP:
		h.mu.Unlock()
		h.emit(Event{Kind: EventRefused, Reason: "ip_limit"})
		writeProblem(w, http.StatusTooManyRequests, "too-many-connections", "Too many WebSocket connections", "")
		return
	}
	h.perIP[ip]++ // reserved now so concurrent handshakes cannot overshoot
	h.mu.Unlock()

	if _, ok := w.(http.Hijacker); !ok {
		w = hijacker{w}
	}
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.mu.Lock()
		h.releaseIP(ip)
		h.mu.Unlock()
		return // Upgrade has answered
	}
	c := &client{h: h, conn: conn, ip: ip}
	h.mu.Lock()
	if h.closing {
		h.releaseIP(ip)
		h.mu.Unlock()
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, closeReasonShutdown), time.Now().Add(h.writeTimeout))
		_ = conn.Close()
		return
	}
	h.clients[c] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	h.connections.Add(1)
	h.emit(Event{Kind: EventConnected})
	go c.readLoop()
}

func (h *Hub) releaseIP(ip string) {
	if n := h.perIP[ip] - 1; n > 0 {
		h.perIP[ip] = n
	} else {
		delete(h.perIP, ip)
	}
}

// inbound is any client message.
type inbound struct {
	Type    string `json:"type"`
	Token   string `json:"token"`
	Channel string `json:"channel"`
}

// reply is any server message other than a broadcast.
type reply struct {
	Type    string `json:"type"`
	Subject string `json:"subject,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	Channel string `json:"channel,omitempty"`
}

var pongMessage = mustPrepare(reply{Type: "pong"})

func mustPrepare(r reply) *websocket.PreparedMessage {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
	if err != nil {
		panic(err)
	}
	return pm
}

func (c *client) reply(r reply) {
	c.send(mustPrepare(r))
}

func (c *client) replyError(code, msg, channel string) {
	c.reply(reply{Type: "error", Code: code, Message: msg, Channel: channel})
}

// readLoop is the connection's first goroutine: it authenticates the
// client, then hands over to serve.
//
// Verify (JWT parsing, perhaps a JWKS fetch) grows a goroutine's stack to
// 8 KiB or more, and the runtime would keep that stack for the life of the
// connection. Serving the long, mostly idle rest on a fresh goroutine
// halves the stack memory of an idle connection (see TestIdleConnMemory).
func (c *client) readLoop() {
	c.conn.SetReadLimit(c.h.readLimit)
	if !c.authenticate() {
		c.finish()
		return
	}
	go c.serve() // inherits the reader's count in h.wg
}

// serve reads the client's requests until the connection ends.
func (c *client) serve() {
	defer c.finish()
	h := c.h
	c.extendReadDeadline()
	c.conn.SetPongHandler(func(string) error {
		c.extendReadDeadline()
		return nil
	})
	c.mu.Lock()
	if !c.closed {
		c.ping = time.AfterFunc(h.pingInterval, c.sendPing)
	}
	c.mu.Unlock()
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.drain()
			}
			c.logReadError(err)
			return
		}
		h.messagesIn.Add(1)
		h.emit(Event{Kind: EventMessageIn})
		if c.dead.Load() {
			continue // closing: wait for the close frame
		}
		c.extendReadDeadline()
		var m inbound
		if typ != websocket.TextMessage || json.Unmarshal(data, &m) != nil {
			c.replyError(CodeBadRequest, "messages must be JSON text", "")
			continue
		}
		switch m.Type {
		case "subscribe":
			c.subscribe(m.Channel)
		case "unsubscribe":
			c.unsubscribe(m.Channel)
		case "ping":
			c.send(pongMessage)
		case "auth":
			c.replyError(CodeBadRequest, "already authenticated", "")
		default:
			c.replyError(CodeBadRequest, "unknown message type", "")
		}
	}
}

func (c *client) extendReadDeadline() {
	// Once a close frame is out, the close wait set by kill must stand.
	if !c.dead.Load() {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.h.pongWait))
	}
}

// authenticate reads and verifies the auth message, enforces the per-user
// cap, and sends auth_ok. On failure it has closed the connection.
func (c *client) authenticate() bool {
	h := c.h
	deadline := time.Now().Add(h.authTimeout)
	if !c.dead.Load() { // Shutdown may already have set a close deadline
		_ = c.conn.SetReadDeadline(deadline)
	}
	typ, data, err := c.conn.ReadMessage()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !c.dead.Load() {
			h.emit(Event{Kind: EventAuthFailed, Reason: "timeout"})
			c.closeNow(CloseAuthFailed, "authentication timeout")
		}
		if errors.Is(err, websocket.ErrReadLimit) {
			c.drain()
		}
		return false // the client left
	}
	h.messagesIn.Add(1)
	h.emit(Event{Kind: EventMessageIn})
	var m inbound
	if typ != websocket.TextMessage || json.Unmarshal(data, &m) != nil || m.Type != "auth" || m.Token == "" {
		h.emit(Event{Kind: EventAuthFailed, Reason: "protocol"})
		c.closeNow(CloseAuthFailed, "authentication required")
		return false
	}
	ctx, cancel := context.WithDeadline(h.ctx, deadline)
	id, err := h.verify(ctx, m.Token)
	cancel()
	if c.dead.Load() {
		return false // shut down meanwhile; the close frame is out
	}
	if err != nil {
		h.log.Debug("hub: authentication failed", "ip", c.ip, "err", err)
		h.emit(Event{Kind: EventAuthFailed, Reason: "invalid"})
		c.closeNow(CloseAuthFailed, "authentication failed")
		return false
	}
	key := id.Tenant + "\x00" + id.Subject
	h.mu.Lock()
	if h.maxPerUser > 0 && h.perUser[key] >= h.maxPerUser {
		h.mu.Unlock()
		h.emit(Event{Kind: EventRefused, Reason: "user_limit"})
		c.closeNow(CloseTooManyConns, "too many connections")
		return false
	}
	h.perUser[key]++
	c.userKey = key
	h.mu.Unlock()
	c.id = id
	h.emit(Event{Kind: EventAuthenticated})
	c.reply(reply{Type: "auth_ok", Subject: id.Subject})
	return true
}

func (c *client) subscribe(channel string) {
	h := c.h
	if !ValidChannel(channel) {
		c.replyError(CodeInvalidChannel, "invalid channel name", "")
		return
	}
	if _, ok := c.subs[channel]; ok {
		c.reply(reply{Type: "subscribed", Channel: channel})
		return
	}
	if len(c.subs) >= h.maxSubs {
		c.replyError(CodeTooManySubscriptions, "subscription limit reached", channel)
		return
	}
	if !h.authorize(c.id, channel) {
		h.emit(Event{Kind: EventForbidden, Channel: channel})
		c.replyError(CodeForbidden, "not allowed to subscribe", channel)
		return
	}
	if c.subs == nil {
		c.subs = make(map[string]struct{}, 1)
	}
	c.subs[channel] = struct{}{}
	confirm := mustPrepare(reply{Type: "subscribed", Channel: channel})
	h.mu.Lock()
	subs := h.channels[channel]
	if subs == nil {
		subs = &subscribers{members: map[*client]struct{}{}}
		h.channels[channel] = subs
	}
	subs.members[c] = struct{}{}
	subs.snap.Store(nil)
	// Queued under the lock, the confirmation precedes every broadcast
	// that can reach the client: publishers see it only after Unlock.
	c.send(confirm)
	h.mu.Unlock()
	h.subscriptions.Add(1)
	h.emit(Event{Kind: EventSubscribed, Channel: channel})
}

func (c *client) unsubscribe(channel string) {
	h := c.h
	if !ValidChannel(channel) {
		c.replyError(CodeInvalidChannel, "invalid channel name", "")
		return
	}
	if _, ok := c.subs[channel]; ok {
		delete(c.subs, channel)
		h.mu.Lock()
		h.removeLocked(c, channel)
		h.mu.Unlock()
		h.subscriptions.Add(-1)
		h.emit(Event{Kind: EventUnsubscribed, Channel: channel})
	}
	c.reply(reply{Type: "unsubscribed", Channel: channel})
}

func (h *Hub) removeLocked(c *client, channel string) {
	subs := h.channels[channel]
	if subs == nil {
		return
	}
	delete(subs.members, c)
	if len(subs.members) == 0 {
		delete(h.channels, channel)
	} else {
		subs.snap.Store(nil)
	}
}

// finish runs when the reader ends: it unregisters the client everywhere
// and closes the connection, which also ends a running writer.
func (c *client) finish() {
	h := c.h
	c.mu.Lock()
	c.closed = true
	c.dead.Store(true)
	if c.ping != nil {
		c.ping.Stop()
	}
	c.mu.Unlock()
	_ = c.conn.Close()

	h.mu.Lock()
	for channel := range c.subs {
		h.removeLocked(c, channel)
	}
	delete(h.clients, c)
	h.releaseIP(c.ip)
	if c.userKey != "" {
		if n := h.perUser[c.userKey] - 1; n > 0 {
			h.perUser[c.userKey] = n
		} else {
			delete(h.perUser, c.userKey)
		}
	}
	h.mu.Unlock()
	h.subscriptions.Add(-int64(len(c.subs)))
	h.connections.Add(-1)
	h.emit(Event{Kind: EventDisconnected, Count: len(c.subs)})
	h.wg.Done()
}

func (c *client) logReadError(err error) {
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
		return
	}
	c.h.log.Debug("hub: connection ended", "ip", c.ip, "subject", c.id.Subject, "err", err)
}

// send queues pm for the client without blocking, starting a writer if
// none is running. A full queue drops the client. It reports whether pm
// was queued.
func (c *client) send(pm *websocket.PreparedMessage) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.h.sendQueue {
		c.mu.Unlock()
		if c.kill(CloseTooSlow, closeReasonTooSlow, false) {
			c.h.dropped.Add(1)
		}
		return false
	}
	c.queue = append(c.queue, pm)
	if !c.writing {
		c.writing = true
		c.h.wg.Add(1) // the reader holds the count above zero
		go c.writeLoop()
	}
	c.mu.Unlock()
	return true
}

// writeLoop writes queued messages until the queue is empty, then exits;
// idle connections thus have no writer goroutine.
func (c *client) writeLoop() {
	defer c.h.wg.Done()
	var batch []*websocket.PreparedMessage
	for {
		c.mu.Lock()
		if batch != nil {
			clear(batch)
			c.spare = batch[:0]
		}
		if c.closed || len(c.queue) == 0 {
			c.writing = false
			if c.closed {
				c.queue, c.spare = nil, nil
			}
			c.mu.Unlock()
			return
		}
		batch, c.queue, c.spare = c.queue, c.spare, nil
		c.mu.Unlock()
		for _, pm := range batch {
			if c.dead.Load() {
				break
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.h.writeTimeout))
			if err := c.conn.WritePreparedMessage(pm); err != nil {
				// A failed or timed-out write leaves the stream corrupt.
				c.abort()
				break
			}
		}
	}
}

// sendPing runs on the ping timer.
func (c *client) sendPing() {
	if c.dead.Load() {
		return
	}
	if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.writeTimeout)); err != nil {
		c.abort()
		return
	}
	c.mu.Lock()
	if !c.closed {
		c.ping.Reset(c.h.pingInterval)
	}
	c.mu.Unlock()
}

// markClosed stops further sends and kills; it reports whether this call
// did so. The caller holds c.mu.
func (c *client) markClosedLocked() bool {
	if c.closed {
		return false
	}
	c.closed = true
	c.dead.Store(true)
	return true
}

// abort closes the connection without a close frame, for broken streams.
func (c *client) abort() {
	c.mu.Lock()
	c.markClosedLocked()
	c.mu.Unlock()
	_ = c.conn.Close()
}

// kill closes the client from any goroutine without blocking: a new
// goroutine sends the close frame, then either waits (graceful) up to
// closeWait for the client to answer, or closes the connection at once.
// It reports whether this call started the close.
func (c *client) kill(code int, text string, graceful bool) bool {
	c.mu.Lock()
	if !c.markClosedLocked() {
		c.mu.Unlock()
		return false
	}
	c.h.wg.Add(1) // the reader holds the count above zero
	c.mu.Unlock()
	go func() {
		defer c.h.wg.Done()
		if code == CloseTooSlow {
			// Reported here, not in send, whose caller may hold h.mu.
			c.h.emit(Event{Kind: EventDropped})
			c.h.log.Warn("hub: dropped slow client", "ip", c.ip, "subject", c.id.Subject)
		}
		wait := closeWait
		if !graceful {
			// A slow client's writer may hold the connection for up to
			// WriteTimeout; don't wait that long to free it.
			wait = min(closeWait, c.h.writeTimeout)
		}
		err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(wait))
		if graceful && err == nil {
			_ = c.conn.UnderlyingConn().SetReadDeadline(time.Now().Add(closeWait))
			return // the reader sees the answer or the deadline and cleans up
		}
		_ = c.conn.Close()
	}()
	return true
}

// drain discards input for up to closeWait after gorilla has answered an
// oversized message with 1009, so the client can read that close frame
// before the connection closes (closing with unread input would reset it).
func (c *client) drain() {
	c.mu.Lock()
	c.markClosedLocked()
	c.mu.Unlock()
	nc := c.conn.UnderlyingConn()
	_ = nc.SetReadDeadline(time.Now().Add(closeWait))
	_, _ = io.Copy(io.Discard, nc)
}

// closeNow closes the connection from the reader goroutine: close frame,
// then a bounded wait for the client's answer.
func (c *client) closeNow(code int, text string) {
	c.mu.Lock()
	c.markClosedLocked()
	c.mu.Unlock()
	if err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
		time.Now().Add(c.h.writeTimeout)); err != nil {
		return
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(closeWait))
	for {
		if _, _, err := c.conn.NextReader(); err != nil {
			return
		}
	}
}
