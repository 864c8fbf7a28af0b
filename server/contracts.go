package server

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// Engine carries WebSocket connections once the HTTP layer has authorised them. The gws
// engine (package gwsengine) and the epoll engine (package eventloop) implement it. The
// server calls Accept, Reject and Drain; app/, which builds the engine, wires the router
// (sequence.Router) to Deliver and calls Close.
type Engine interface {
	// Accept completes the upgrade of an authorised request, registers the connection in a
	// shard and serves it until it ends, then calls Hooks.Closed exactly once. Messages
	// delivered after the client has seen the 101 response reach it. On error nothing was
	// registered and Closed is not called.
	Accept(w http.ResponseWriter, r *http.Request, a session.Admission) error
	// Reject completes the upgrade, sends the ErrorMessage for code (message.Code*) and
	// closes with closeCode. Nothing is registered.
	Reject(w http.ResponseWriter, r *http.Request, subprotocol, code string, closeCode uint16)
	// Deliver hands a batch of backplane messages to every shard. It may wait while a
	// shard's queue is full (so back-pressure reaches the backplane's reader), never on a
	// socket; it takes ownership of batch (the slice and its payloads must not be reused).
	Deliver(batch []registry.Delivery)
	// Drain closes every connection with 1001, the closes spread evenly over window, and
	// returns when all have ended or ctx is done.
	Drain(ctx context.Context, window time.Duration) error
	// Close stops the engine, closing whatever connections remain (1001).
	Close() error
}

// Fronter is an engine that can read upgrade requests off the listening socket itself (the
// epoll engine's eventloop.Front): Front serves ln's connections, runs upgrade (admission)
// for each WebSocket upgrade at path it reads, with the request as net/http would build it,
// and returns the listener net/http serves instead, which yields every other connection with
// the bytes already read replayed. headerTimeout and maxHeaderBytes are net/http's
// ReadHeaderTimeout and MaxHeaderBytes, so the same limits hold on both paths.
type Fronter interface {
	Front(ln net.Listener, path string, upgrade http.Handler, headerTimeout time.Duration, maxHeaderBytes int) (net.Listener, error)
}

// Subscriber is the part of the backplane that holds channels for connections.
type Subscriber interface {
	// Subscribe takes a reference on each channel and returns nil only once every channel is
	// live (confirmed by the backplane, so a message published afterwards is delivered).
	// While the backplane is disconnected or stalled it waits for the channels to be
	// confirmed after reconnecting, and returns an error when ctx ends first: it never
	// reports success for a subscription it could not confirm. The references are taken
	// either way; the caller drops them with Unsubscribe after an error.
	Subscribe(ctx context.Context, channels []string) error
	// Unsubscribe drops a reference on each channel; a channel left with none is
	// unsubscribed after a short linger.
	Unsubscribe(channels []string)
}

// Backplane is what the server uses of the backplane, which relays messages between nodes
// (Redis) or within one (embedded). Starting it, its history and closing it are its owner's
// business (app/).
type Backplane interface {
	Subscriber
	// PublishSequenced appends payload to channel's history and sends it to every node's
	// subscribers in one step, and returns its position. A timeout is not retried.
	PublishSequenced(ctx context.Context, channel string, payload []byte, traceparent string) (history.Position, error)
	// Ready returns nil while connected, else why not.
	Ready() error
}
