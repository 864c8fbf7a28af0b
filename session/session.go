// Package session holds what a connection does once it is accepted, independent of the engine
// that carries its bytes: who it is (Identity), how the server answers a client message
// (Policy: echo, in-band token refresh), the knobs every engine honours (Options), and the
// hook an engine calls exactly once when a connection ends. The gws and epoll engines both
// build on it, so their behaviour cannot drift apart.
package session

import (
	"log/slog"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/telemetry"
)

// Subprotocol is protocol notifications.v1: payloads verbatim. A browser that passes its
// token as the `bearer.<JWT>` subprotocol offers it too; the token is never echoed back.
const Subprotocol = "notifications.v1"

// SubprotocolV2 is protocol notifications.v2 (docs/PROTOCOL.md): streams, cursors, resume.
// The server selects it whenever a client offers it, whatever else the client offers.
const SubprotocolV2 = "notifications.v2"

// Select is the subprotocol the server selects from those a client offered (each already
// trimmed): v2 when offered, else v1 when offered, else none.
func Select(offered func(proto string) bool) string {
	switch {
	case offered(SubprotocolV2):
		return SubprotocolV2
	case offered(Subprotocol):
		return Subprotocol
	}
	return ""
}

// BearerPrefix marks the subprotocol entry that carries a token.
const BearerPrefix = "bearer."

// Identity is who an accepted connection authenticated as.
type Identity struct {
	User   string
	Groups []string
}

// Admission is what the HTTP layer hands an engine for an upgrade it has authorised.
type Admission struct {
	Identity    Identity
	Expires     time.Time // token expiry; the engine closes with TOKEN_EXPIRED + 1008 then
	Subprotocol string    // "", Subprotocol or SubprotocolV2
	Started     time.Time // when the upgrade request arrived, for the handshake histogram
}

// V2 reports whether the connection speaks notifications.v2.
func (a *Admission) V2() bool { return a.Subprotocol == SubprotocolV2 }

// Hooks is what an engine reports back to the service. Closed is called exactly once for each
// connection that Accept registered, after it is out of the engine's registry, with the close
// code it ended with (1006 when the peer vanished without a close frame).
//
// Join and Leave carry a token refresh's change of groups to the backplane: Join takes a
// reference on the channel of each group and calls done, on another goroutine, once they are
// live or the wait for them has given up (the references are kept either way: the backplane
// subscribes them when it can); Leave drops references. A reference that Join took is given
// back by a Leave of the same groups, or, once the groups are the connection's, by Closed.
type Hooks interface {
	Closed(id *Identity, code uint16)
	Join(groups []string, done func())
	Leave(groups []string)
}

// Verifier checks a refreshed token.
type Verifier interface {
	Verify(token string) (auth.Claims, error)
}

// Options are the settings every engine honours.
type Options struct {
	Shards            int
	HeartbeatInterval time.Duration // server ping period
	ConnectionTimeout time.Duration // silence before close 1001
	MaxMessageSize    int           // inbound message limit; 1009 above it
	SendQueueLimit    int           // outbound bytes queued per connection; 1013 above it
	InboundRate       int           // inbound frames per second per connection (FrameRate); 0: no limit
	Policy            *Policy
	Resume            *resume.Service // v2 connections' resume; nil: they resume with nothing
	Hooks             Hooks
	Metrics           *telemetry.Metrics
	Logger            *slog.Logger
}

// Policy answers client messages.
type Policy struct {
	verifier Verifier
}

// NewPolicy returns a policy that checks token refreshes with v.
func NewPolicy(v Verifier) *Policy { return &Policy{verifier: v} }

// Action is what an engine must do after a client text message: send Reply (if any) as a text
// frame, then close with Close (if non-zero); a non-zero Expires replaces the connection's
// token expiry at once. Echo marks Reply as the echo of the text (v2 answers it with an echo
// frame instead, see Reply). Refresh marks a verified token refresh: the connection's groups become
// Groups (see Regroup), and Reply goes out only once they have.
type Action struct {
	Reply   []byte
	Close   uint16
	Expires time.Time
	Echo    bool
	Refresh bool
	Groups  []string
}

// OnText decides the answer to a client text message: an auth refresh for the same subject
// extends the connection's life, changes its groups and is acknowledged; a bad refresh closes
// it with 1008, and so does a refresh over the refresh rate (RATE_LIMITED); any other text is
// echoed. in and now (the engine's monotonic clock, nanoseconds) account the refresh rate.
func (p *Policy) OnText(id *Identity, in *Inbound, now int64, text []byte) Action {
	token, isAuth := message.ParseAuth(text)
	if !isAuth {
		return Action{Reply: message.Echo(text), Echo: true}
	}
	if !in.refreshes.Take(refreshRate, now, 1) {
		return RateLimited()
	}
	// docs/PROTOCOL.md "Token refresh, keep-alive and limits": any failed refresh, an
	// already-expired token included, is AUTH_FAILED; the
	// connection's own expiry is the only thing reported as TOKEN_EXPIRED.
	claims, err := p.verifier.Verify(token)
	if err != nil || claims.Subject != id.User {
		return Action{Reply: message.ErrorJSON(message.CodeAuthFailed), Close: message.ClosePolicyViolation}
	}
	return Action{Reply: message.AuthOKJSON(claims.ExpiresAt.Unix()), Expires: claims.ExpiresAt, Refresh: true, Groups: claims.Groups}
}

// V2Reply is the reply of a v2 connection for act, the action for text: the echo frame in
// place of v1's "Echo: X", anything else unchanged.
func V2Reply(act *Action, text []byte) []byte {
	if act.Echo {
		return resume.EchoFrame(text)
	}
	return act.Reply
}

// Expired is the action for a connection whose token expiry has passed.
func Expired() Action {
	return Action{Reply: message.ErrorJSON(message.CodeTokenExpired), Close: message.ClosePolicyViolation}
}

// SlowConsumer is the action for a connection whose outbound queue went over the limit.
func SlowConsumer() Action {
	return Action{Reply: message.ErrorJSON(message.CodeSlowConsumer), Close: message.CloseTryAgainLater}
}

// TooLarge is the action for an inbound message over MaxMessageSize.
func TooLarge() Action {
	return Action{Reply: message.ErrorJSON(message.CodeMessageTooLarge), Close: message.CloseMessageTooBig}
}
