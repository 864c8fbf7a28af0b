package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// serveWS admits or refuses an upgrade. The order matters: cheap refusals that need no
// upgrade (not a WebSocket request, draining, foreign origin, handshake rate, node full) come
// first as plain HTTP errors; refusals a browser must be able to read (bad token, per-user
// limit) complete the upgrade and close with 1008, since a browser cannot see the status of a
// failed upgrade. Only an admitted connection subscribes and reaches the engine, and only once
// the backplane has confirmed its subscriptions (else 503 + Retry-After: no 101 is sent for a
// connection that would miss its messages). It is the one admission of both ways a request
// arrives: net/http's mux, and the epoll engine's front (Serve), which builds the same
// *http.Request from the bytes it read and answers through a ResponseWriter of its own.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	if !rfc6455.IsUpgrade(r.Header) {
		http.Error(w, "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)", http.StatusBadRequest)
		return
	}
	r, span := s.traceUpgrade(r)
	defer span.End()
	if s.draining.Load() {
		httpStatus(span, http.StatusServiceUnavailable)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "server is draining; reconnect to another node", http.StatusServiceUnavailable)
		return
	}
	ip := clientIP(r, s.cfg.TrustedProxies)
	if origin := r.Header.Get("Origin"); origin != "" && !s.cfg.AllowedOrigins.Allows(origin) {
		s.connection(span, telemetry.ResultOriginRejected, "")
		s.log.WarnContext(r.Context(), "upgrade refused: origin not allowed", "origin", origin, "client", ip)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	if s.rate != nil && !s.rate.allow(ip, started) {
		s.connection(span, telemetry.ResultRateLimited, "")
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many handshakes from this address", http.StatusTooManyRequests)
		return
	}
	if err := s.limits.ReserveNode(); err != nil {
		s.connection(span, telemetry.ResultLimitReached, "")
		w.Header().Set("Retry-After", "5")
		http.Error(w, "node connection limit reached", http.StatusServiceUnavailable)
		return
	}
	token, subprotocol := credentials(r)
	claims, err := s.verifier.Verify(token)
	if err != nil {
		s.limits.ReleaseNode()
		code := message.CodeAuthFailed
		if errors.Is(err, auth.ErrExpired) {
			code = message.CodeTokenExpired
		}
		s.connection(span, telemetry.ResultAuthFailed, code)
		s.log.InfoContext(r.Context(), "upgrade refused: authentication failed", "reason", err.Error(), "client", ip)
		s.engine.Reject(w, r, subprotocol, code, message.ClosePolicyViolation)
		return
	}
	channels := s.topics.Channels(claims.Subject, claims.Groups)
	// The user id is kept as the tail of its channel's name, which the backplane holds for
	// as long as the connection anyway: one string per idle connection instead of two.
	user := channels[0][len(s.topics.UserPrefix):]
	if err := s.limits.ReserveUser(user); err != nil {
		s.limits.ReleaseNode()
		s.connection(span, telemetry.ResultLimitReached, message.CodeConnectionLimit)
		s.log.InfoContext(r.Context(), "upgrade refused: per-user connection limit", "limit", s.cfg.MaxConnectionsPerUser, "client", ip)
		s.engine.Reject(w, r, subprotocol, message.CodeConnectionLimit, message.ClosePolicyViolation)
		return
	}
	id := session.Identity{User: user, Groups: claims.Groups}
	ctx, cancel := context.WithTimeout(r.Context(), subscribeTimeout)
	err = s.backplane.Subscribe(ctx, channels)
	cancel()
	if err != nil {
		// Subscribe reports success only once Redis has confirmed every channel; a 101 now
		// would open a connection that silently misses what is published to it.
		s.backplane.Unsubscribe(channels)
		s.members.release(user)
		if r.Context().Err() != nil {
			s.log.InfoContext(r.Context(), "upgrade abandoned by the client while subscribing", "remote", r.RemoteAddr)
			return
		}
		s.connection(span, telemetry.ResultBackplaneUnavailable, "")
		s.log.WarnContext(r.Context(), "upgrade refused: subscriptions not confirmed by the backplane", "err", err, "remote", r.RemoteAddr)
		// An outage that outlasted the subscribe timeout rarely ends within a second; a
		// longer pause keeps retrying clients from tying up a handshake each, back to back.
		w.Header().Set("Retry-After", retryAfterBackplane)
		http.Error(w, "backplane unavailable", http.StatusServiceUnavailable)
		return
	}
	err = s.engine.Accept(w, r, session.Admission{Identity: id, Expires: claims.ExpiresAt, Subprotocol: subprotocol, Started: started})
	if err != nil {
		s.backplane.Unsubscribe(channels)
		s.members.release(user)
		span.RecordError(err)
		s.log.InfoContext(r.Context(), "upgrade failed", "err", err, "client", ip)
		return
	}
	s.connection(span, telemetry.ResultAccepted, "")
}

// credentials finds the token (query `token`, or a `bearer.<JWT>` subprotocol entry) and the
// subprotocol to select (session.Select: notifications.v2 when offered, else
// notifications.v1 when offered, else none). The bearer entry is never selected, so the token
// is never echoed in the response.
func credentials(r *http.Request) (token, subprotocol string) {
	token = r.URL.Query().Get("token")
	offered := map[string]bool{}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			offered[p] = true
			if strings.HasPrefix(p, session.BearerPrefix) && token == "" {
				token = strings.TrimPrefix(p, session.BearerPrefix)
			}
		}
	}
	return token, session.Select(func(p string) bool { return offered[p] })
}
