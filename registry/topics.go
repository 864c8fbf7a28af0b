package registry

import (
	"strings"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/tracing"
)

// Kind is the audience a backplane channel addresses.
type Kind uint8

// Audiences of docs/PROTOCOL.md "Channels".
const (
	User Kind = iota + 1
	Group
	Broadcast
)

func (k Kind) String() string {
	switch k {
	case User:
		return "user"
	case Group:
		return "group"
	case Broadcast:
		return "broadcast"
	}
	return "unknown"
}

// Target is one audience: a user id, a group id, or everyone (ID empty).
type Target struct {
	Kind Kind
	ID   string
}

// Stream is the name clients know the target's stream by (they never see channel names): "user"
// for a connection's own user, "group:<id>", "broadcast".
func (t Target) Stream() string {
	switch t.Kind {
	case User:
		return "user"
	case Group:
		return "group:" + t.ID
	}
	return "broadcast"
}

// Delivery is one backplane payload for one audience. Payload is shared by every shard and
// every connection it reaches: nobody may modify it.
type Delivery struct {
	Target  Target
	Payload []byte
	// Position is the message's place in its stream's history; zero for a message published
	// live only (plain PUBLISH), which v2 clients receive with "cursor":null.
	Position history.Position
	// Gap, when set, makes this delivery a notice rather than a message (Payload is nil): the
	// node could not deliver every position of the stream up to Position. v2 connections get a
	// sync frame with recovered:false at this point of the stream; v1 connections nothing.
	Gap *Gap
	// Trace, when set, is the delivery report of a message the tracer sampled: the engines'
	// shards add their counts and release their hold on it. Nil for every other message.
	Trace *tracing.Delivery
}

// Gap says why positions of a stream were not delivered and how many (Missed < 0: unknown).
type Gap struct {
	Reason history.Reason
	Missed int64
}

// Topics names backplane channels: `{UserPrefix}{user}`, `{GroupPrefix}{group}` and the
// broadcast channel.
type Topics struct {
	UserPrefix  string
	GroupPrefix string
	Broadcast   string
}

// UserChannel is the channel of one user.
func (t Topics) UserChannel(user string) string { return t.UserPrefix + user }

// GroupChannel is the channel of one group.
func (t Topics) GroupChannel(group string) string { return t.GroupPrefix + group }

// Channel is the channel of a target.
func (t Topics) Channel(tg Target) string {
	switch tg.Kind {
	case User:
		return t.UserChannel(tg.ID)
	case Group:
		return t.GroupChannel(tg.ID)
	}
	return t.Broadcast
}

// Channels lists the channels a connection of user with groups listens on, the user's first.
func (t Topics) Channels(user string, groups []string) []string {
	out := make([]string, 0, 2+len(groups))
	out = append(out, t.UserChannel(user))
	for _, g := range groups {
		out = append(out, t.GroupChannel(g))
	}
	return append(out, t.Broadcast)
}

// Parse maps a channel back to its target. The longer of the two prefixes is tried first so
// that one prefix extending the other ("ws:" and "ws:group:") still resolves correctly.
func (t Topics) Parse(channel string) (Target, bool) {
	if channel == t.Broadcast {
		return Target{Kind: Broadcast}, true
	}
	first, second := t.UserPrefix, t.GroupPrefix
	firstKind, secondKind := User, Group
	if len(second) > len(first) {
		first, second = second, first
		firstKind, secondKind = secondKind, firstKind
	}
	if id, ok := strings.CutPrefix(channel, first); ok && id != "" {
		return Target{Kind: firstKind, ID: id}, true
	}
	if id, ok := strings.CutPrefix(channel, second); ok && id != "" {
		return Target{Kind: secondKind, ID: id}, true
	}
	return Target{}, false
}
