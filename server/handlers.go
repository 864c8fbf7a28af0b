package server

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/huleedu/websocket-service/registry"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is what an engine that can fail while the process lives on (the epoll engine's
// shards) implements to say so; an engine without it is always ready.
type readiness interface {
	Ready() error
}

// serveReadyz is 200 only while the node can do its job: the backplane is connected, the
// engine has not failed, and the node is not draining.
func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": "draining"})
		return
	}
	if err := s.backplane.Ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": "backplane: " + err.Error()})
		return
	}
	if r, ok := s.engine.(readiness); ok {
		if err := r.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": "engine: " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.metrics.WritePrometheus(w)
}

// publishRequest is the body of POST /api/publish: exactly one of UserID, Group, Broadcast.
type publishRequest struct {
	UserID    string          `json:"user_id"`
	Group     string          `json:"group"`
	Broadcast bool            `json:"broadcast"`
	Message   json.RawMessage `json:"message"`
}

func (p publishRequest) target() (registry.Target, error) {
	var targets []registry.Target
	if p.UserID != "" {
		targets = append(targets, registry.Target{Kind: registry.User, ID: p.UserID})
	}
	if p.Group != "" {
		targets = append(targets, registry.Target{Kind: registry.Group, ID: p.Group})
	}
	if p.Broadcast {
		targets = append(targets, registry.Target{Kind: registry.Broadcast})
	}
	if len(targets) != 1 {
		return registry.Target{}, errors.New(`give exactly one of "user_id", "group" or "broadcast": true`)
	}
	return targets[0], nil
}

// payload is what subscribers receive: a JSON string message is sent as its text, anything
// else as its JSON.
func (p publishRequest) payload() ([]byte, error) {
	m := bytes.TrimSpace(p.Message)
	if len(m) == 0 || bytes.Equal(m, []byte("null")) {
		return nil, errors.New(`"message" is required`)
	}
	if m[0] == '"' {
		var s string
		if err := json.Unmarshal(m, &s); err != nil {
			return nil, errors.New(`"message" is not a valid JSON string`)
		}
		return []byte(s), nil
	}
	return m, nil
}

// PublishResponse is the body of a 202 from POST /api/publish: the message is stored in its
// stream's history and published.
type PublishResponse struct {
	Channel string `json:"channel"` // the Redis channel it was published on
	Stream  string `json:"stream"`  // the stream clients know it by: user, group:<id>, broadcast
	Cursor  string `json:"cursor"`  // its position, as clients see it
}

func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	if s.cfg.PublishAPIKey == "" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use POST"})
		return
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.PublishAPIKey)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="publish"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong API key"})
		return
	}
	var req publishRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPublishBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, status, map[string]string{"error": "invalid body: " + err.Error()})
		return
	}
	target, err := req.target()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	payload, err := req.payload()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	pos, err := s.Publish(r.Context(), target, payload)
	if err != nil {
		s.log.Warn("publish failed", "kind", target.Kind.String(), "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "backplane unavailable"})
		return
	}
	writeJSON(w, http.StatusAccepted, PublishResponse{Channel: s.topics.Channel(target), Stream: target.Stream(), Cursor: pos.Cursor()})
}
