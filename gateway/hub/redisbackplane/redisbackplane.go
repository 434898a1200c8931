// Package redisbackplane connects the hubs of several gateway replicas
// through Redis pub/sub, so that a broadcast published on any replica
// reaches the WebSocket clients of all of them.
//
// Every replica SUBSCRIBEs to one Redis channel, prefix+"broadcast", and a
// broadcast is PUBLISHed there as the hub channel name, a newline, and the
// JSON data. A replica therefore receives every broadcast, its own
// included — that echo is how it delivers its own broadcasts, exactly once
// — and the hub drops the ones for channels without local subscribers with
// one map lookup. Any service with a Redis client can publish too:
//
//	PUBLISH hub:broadcast "public:news\n{\"title\":\"hello\"}"
//
// Redis pub/sub is at most once: what is published while a replica is
// disconnected never reaches it. [Backplane.Run] reconnects on its own,
// after failures and after a Redis restart, and pings Redis when the
// subscription is quiet to notice a hung server or a dead connection.
package redisbackplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is used when the prefix is empty.
const DefaultPrefix = "hub:"

// ErrInvalidChannel is returned by Publish for a hub channel that contains
// a newline, which the payload format reserves as separator.
var ErrInvalidChannel = errors.New("redisbackplane: channel contains a newline")

// Settings configures a [Backplane] made by [NewWithSettings]. The zero
// value is usable.
type Settings struct {
	// Prefix namespaces the Redis channel, so several hubs can share one
	// Redis. If empty, DefaultPrefix.
	Prefix string
	// PingInterval is how long the subscription may be quiet before Run
	// pings Redis; without an answer within another interval it drops the
	// connection and subscribes anew. If zero, 5s.
	PingInterval time.Duration
	// MaxBackoff caps the wait between reconnection attempts, which starts
	// at 50ms and doubles. If zero, 2s.
	MaxBackoff time.Duration
	// Logger receives connection-state diagnostics. If nil, slog.Default().
	Logger *slog.Logger
}

// Backplane is a hub.Backplane on Redis pub/sub. It is safe for concurrent
// use; Run must be called at most once at a time.
type Backplane struct {
	client       redis.UniversalClient
	channel      string
	pingInterval time.Duration
	maxBackoff   time.Duration
	log          *slog.Logger
}

// New returns a backplane on client whose Redis channel is
// prefix+"broadcast" (DefaultPrefix if prefix is empty). It starts nothing;
// call Run.
func New(client redis.UniversalClient, prefix string) *Backplane {
	return NewWithSettings(client, Settings{Prefix: prefix})
}

// NewWithSettings is New with every setting.
func NewWithSettings(client redis.UniversalClient, s Settings) *Backplane {
	b := &Backplane{
		client:       client,
		channel:      s.Prefix,
		pingInterval: s.PingInterval,
		maxBackoff:   s.MaxBackoff,
		log:          s.Logger,
	}
	if b.channel == "" {
		b.channel = DefaultPrefix
	}
	b.channel += "broadcast"
	if b.pingInterval <= 0 {
		b.pingInterval = 5 * time.Second
	}
	if b.maxBackoff <= 0 {
		b.maxBackoff = 2 * time.Second
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	return b
}

// Channel returns the Redis channel the backplane publishes and listens on.
func (b *Backplane) Channel() string { return b.channel }

// Publish sends msg for the hub channel to every replica, this one
// included.
func (b *Backplane) Publish(ctx context.Context, channel string, msg []byte) error {
	if strings.IndexByte(channel, '\n') >= 0 {
		return ErrInvalidChannel
	}
	payload := make([]byte, 0, len(channel)+1+len(msg))
	payload = append(payload, channel...)
	payload = append(payload, '\n')
	payload = append(payload, msg...)
	if err := b.client.Publish(ctx, b.channel, payload).Err(); err != nil {
		return fmt.Errorf("redisbackplane: publish: %w", err)
	}
	return nil
}

// errStale ends a subscription whose connection stopped answering pings.
var errStale = errors.New("redisbackplane: no answer to ping")

// Run subscribes and calls deliver for every broadcast until ctx ends, then
// returns nil. It reconnects by itself, with backoff, whenever Redis fails.
// deliver is called from Run's goroutine, one message at a time, and should
// not block.
func (b *Backplane) Run(ctx context.Context, deliver func(channel string, msg []byte)) error {
	backoff := time.Duration(0)
	for {
		err := b.session(ctx, deliver, &backoff)
		if ctx.Err() != nil {
			return nil
		}
		b.log.Warn("redisbackplane: subscription lost, resubscribing", "channel", b.channel, "err", err)
		if !b.wait(ctx, &backoff) {
			return nil
		}
	}
}

// wait sleeps for the next backoff step; it reports false if ctx ended.
func (b *Backplane) wait(ctx context.Context, backoff *time.Duration) bool {
	*backoff = min(max(2**backoff, 50*time.Millisecond), b.maxBackoff)
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session runs one PubSub until ctx ends or its connection goes stale.
// Connection errors are retried inside the session, after backoff: the
// PubSub redials and resubscribes on the next receive.
func (b *Backplane) session(ctx context.Context, deliver func(string, []byte), backoff *time.Duration) error {
	ps := b.client.Subscribe(ctx, b.channel)
	// A receive blocks in a socket read that ignores ctx; closing the
	// PubSub is what ends it promptly.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	pinged := false
	for {
		m, err := ps.ReceiveTimeout(ctx, b.pingInterval)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					return errStale
				}
				pinged = true
				if err := ps.Ping(ctx); err != nil {
					return fmt.Errorf("ping: %w", err)
				}
				continue
			}
			pinged = false
			b.log.Debug("redisbackplane: receive failed", "err", err)
			if !b.wait(ctx, backoff) {
				return nil
			}
			continue
		}
		pinged = false
		*backoff = 0
		switch m := m.(type) {
		case *redis.Message:
			channel, msg, ok := strings.Cut(m.Payload, "\n")
			if !ok {
				b.log.Warn("redisbackplane: dropped malformed message", "bytes", len(m.Payload))
				continue
			}
			deliver(channel, []byte(msg))
		case *redis.Subscription:
			b.log.Debug("redisbackplane: subscribed", "channel", m.Channel, "kind", m.Kind)
		}
	}
}
