package server

import (
	"context"
	"log/slog"

	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// Members is what the node's admitted connections hold: a backplane reference on each of
// their channels and their slots in the connection limits. The upgrade (Server) takes them;
// the engine gives them back through the session.Hooks that Members implements. It is apart
// from Server because the engine reports to it: it is built before the engine, and the Server
// after both.
type Members struct {
	topics  registry.Topics
	limits  *registry.Limits
	subs    Subscriber
	metrics *telemetry.Metrics
	log     *slog.Logger
}

var _ session.Hooks = (*Members)(nil)

// NewMembers returns the bookkeeping of a node whose channels are named by topics, whose
// connections count against limits and subscribe through subs.
func NewMembers(topics registry.Topics, limits *registry.Limits, subs Subscriber, m *telemetry.Metrics, log *slog.Logger) *Members {
	return &Members{topics: topics, limits: limits, subs: subs, metrics: m, log: log}
}

// Closed is the engines' hook for a connection that ended: it gives back what the upgrade
// took (subscriptions, limit slots) and counts the disconnect.
func (ms *Members) Closed(id *session.Identity, code uint16) {
	ms.subs.Unsubscribe(ms.topics.Channels(id.User, id.Groups))
	ms.release(id.User)
	ms.metrics.Disconnect(code)
}

// Join is the engines' hook for a token refresh that added groups: it subscribes their
// channels without holding up the engine (a shard goroutine must never wait for the
// backplane) and calls done once they are live, or once subscribeTimeout has passed; the
// references are kept either way, as the backplane subscribes them when it can.
func (ms *Members) Join(groups []string, done func()) {
	channels := ms.groupChannels(groups)
	go func() {
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
		defer cancel()
		if err := ms.subs.Subscribe(ctx, channels); err != nil {
			ms.log.Warn("token refresh: subscribing added groups not confirmed", "groups", len(groups), "err", err)
		}
	}()
}

// Leave is the engines' hook for groups a connection no longer has.
func (ms *Members) Leave(groups []string) {
	if len(groups) > 0 {
		ms.subs.Unsubscribe(ms.groupChannels(groups))
	}
}

func (ms *Members) groupChannels(groups []string) []string {
	out := make([]string, len(groups))
	for i, g := range groups {
		out[i] = ms.topics.GroupChannel(g)
	}
	return out
}

// release gives back the limit slots of one of user's connections.
func (ms *Members) release(user string) {
	ms.limits.ReleaseUser(user)
	ms.limits.ReleaseNode()
}
