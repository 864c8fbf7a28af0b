// Package backplane carries messages between nodes: a Redis relay (a small fixed set of Pub/Sub
// connections, reference-counted and coalesced SUBSCRIBE/UNSUBSCRIBE, batched dispatch,
// reconnect with resubscribe, sharded Pub/Sub on a cluster), an embedded in-process backplane
// with the same semantics for a single node, and a Publisher for tools. It knows nothing of
// WebSockets or users: it moves (channel, payload) pairs to a Sink.
//
// Subscribe reports success only for channels confirmed live (liveness.go): through a Redis
// outage, a stall or a cluster topology change it waits for Redis, or fails when its context
// ends; it never lets a caller believe a subscription holds that Redis has not confirmed.
//
// A Sink that is also a Watcher learns, in order with the messages, when a channel's
// subscription started, resumed after being lost (a reconnect, a moved slot: what was
// published meanwhile is missing, and history can fill it) or stopped.
package backplane

import "github.com/huleedu/websocket-service/history"

// Message is one payload received on one channel.
type Message struct {
	Channel string
	// Payload is what the publisher published, byte for byte: for a sequenced message the
	// envelope it travelled in through Redis is already removed.
	Payload []byte
	// Position is a sequenced message's place in its stream's history; zero for a message
	// published with plain PUBLISH (live only).
	Position history.Position
	// Prev is the tag of the stream's message before this one (0 before the first), so that
	// a receiver can tell a continuation from a rewound history.
	Prev uint32
	// Traceparent is the W3C traceparent given at publish, if any; it shares Payload's memory.
	Traceparent []byte
}

// Sink receives batches of messages in arrival order (per channel, publish order). It takes
// ownership of the batch slice and the payloads, which nobody else modifies. It is called from
// the backplane's receive goroutine and must not block on I/O.
type Sink interface {
	Deliver(batch []Message)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(batch []Message)

// Deliver calls f(batch).
func (f SinkFunc) Deliver(batch []Message) { f(batch) }

// Change is what happened to a channel's subscription, as a Watcher learns it.
type Change uint8

// Changes of a channel's subscription.
const (
	// Started: the node subscribed the channel afresh (it held no subscription on it before):
	// nothing published earlier is owed to anyone.
	Started Change = iota + 1
	// Resumed: the channel is subscribed again after its subscription was lost without the
	// node asking (a Pub/Sub connection dropped and returned, a cluster slot moved to another
	// master): messages published in between were not received.
	Resumed
	// Stopped: the node no longer subscribes the channel.
	Stopped
)

// Subscription is one change of one channel's subscription.
type Subscription struct {
	Channel string
	Change  Change
}

// Watcher is a Sink that also learns when channels' subscriptions change, in order with their
// messages: a change reported before a batch happened before every message of that batch on
// the channel (Resumed: Redis confirmed the new subscription, so every message published from
// then on arrives after it). It is called from the backplane's receive goroutines, like
// Deliver, and must not block on I/O either.
type Watcher interface {
	Sink
	Subscriptions(changes []Subscription)
}
