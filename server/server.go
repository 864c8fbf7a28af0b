package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// Routes.
const (
	PathWS      = "/ws"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
	PathPublish = "/api/publish"
)

// Timeouts of the HTTP layer. A client that trickles its upgrade request (slowloris) is cut
// off by readHeaderTimeout; subscribeTimeout bounds how long an upgrade waits for Redis to
// confirm its subscriptions (an upgrade it does not confirm in time is answered 503 with
// Retry-After retryAfterBackplane seconds).
const (
	readHeaderTimeout   = 10 * time.Second
	idleTimeout         = 60 * time.Second
	maxHeaderBytes      = 64 << 10
	subscribeTimeout    = 5 * time.Second
	retryAfterBackplane = "5"
	maxPublishBody      = 1 << 20
)

// TokenVerifier checks a connecting client's token.
type TokenVerifier interface {
	Verify(token string) (auth.Claims, error)
}

// Options are what New needs: the parts the server fronts, built before it (app/ builds them
// in dependency order and closes them in reverse).
type Options struct {
	Config    config.Config
	Verifier  TokenVerifier
	Metrics   *telemetry.Metrics
	Logger    *slog.Logger
	Tracing   *tracing.Tracing // nil: off
	Members   *Members         // the hooks Engine reports to
	Backplane Backplane
	Engine    Engine
}

// Server is the HTTP layer of one node.
type Server struct {
	cfg       config.Config
	verifier  TokenVerifier
	metrics   *telemetry.Metrics
	log       *slog.Logger
	tracing   *tracing.Tracing
	topics    registry.Topics
	members   *Members
	limits    *registry.Limits // members' limits: the upgrade reserves, Members.Closed releases
	rate      *ipRate          // nil when HANDSHAKE_RATE_PER_IP is 0
	engine    Engine
	backplane Backplane
	http      *http.Server
	draining  atomic.Bool
}

// New builds the server over the parts in o. Nothing listens until Serve.
func New(o Options) *Server {
	c := o.Config
	s := &Server{
		cfg:       c,
		verifier:  o.Verifier,
		metrics:   o.Metrics,
		log:       o.Logger,
		tracing:   o.Tracing,
		topics:    o.Members.topics,
		members:   o.Members,
		limits:    o.Members.limits,
		engine:    o.Engine,
		backplane: o.Backplane,
	}
	if s.tracing == nil {
		s.tracing = tracing.Off()
	}
	if c.HandshakeRatePerIP > 0 {
		s.rate = newIPRate(c.HandshakeRatePerIP)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathWS, s.serveWS)
	mux.HandleFunc("GET "+PathHealthz, s.serveHealthz)
	mux.HandleFunc("GET "+PathReadyz, s.serveReadyz)
	mux.HandleFunc("GET "+PathMetrics, s.serveMetrics)
	mux.HandleFunc(PathPublish, s.servePublish)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Handler is the server's HTTP handler (for tests that bring their own listener).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve serves HTTP on ln until Shutdown. With an engine that reads upgrades itself
// (Fronter: the epoll engine), WebSocket upgrades reach admission from it and net/http
// serves every other request.
func (s *Server) Serve(ln net.Listener) error {
	if f, ok := s.engine.(Fronter); ok {
		front, err := f.Front(ln, PathWS, http.HandlerFunc(s.serveWS), s.http.ReadHeaderTimeout, s.http.MaxHeaderBytes)
		if err != nil {
			// A listener without a descriptor (TLS, an in-memory one in a test): net/http
			// reads every request, as with the gws engine.
			s.log.Warn("upgrades are read by net/http", "err", err)
		} else {
			ln = front
		}
	}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown drains the node as docs/OPERATIONS.md "Lifecycle" says: not ready at once, no new upgrades,
// every connection closed with 1001 spread over the drain window, then the HTTP server shut.
// Health and readiness keep answering meanwhile, so the orchestrator sees the node draining
// rather than dead. Closing the engine and then the backplane is left to their owner (app/),
// after this returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	window := s.cfg.ShutdownDrainTimeout.D()
	s.log.Info("draining", "window", window.String())
	drainCtx, cancel := context.WithTimeout(ctx, window+5*time.Second)
	defer cancel()
	var errs []error
	if err := s.engine.Drain(drainCtx, window); err != nil {
		errs = append(errs, fmt.Errorf("drain: %w", err))
	}
	httpCtx, cancelHTTP := context.WithTimeout(ctx, 2*time.Second)
	defer cancelHTTP()
	if err := s.http.Shutdown(httpCtx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	return errors.Join(errs...)
}

// Topics returns the node's channel naming.
func (s *Server) Topics() registry.Topics { return s.topics }

// Publish appends payload to target's history and publishes it through the backplane, so
// every node delivers it, and returns its position. The span in ctx, if any, travels with the
// message as its traceparent, so every node's delivery span joins its trace.
func (s *Server) Publish(ctx context.Context, target registry.Target, payload []byte) (history.Position, error) {
	ch := s.topics.Channel(target)
	p, err := s.backplane.PublishSequenced(ctx, ch, payload, tracing.Traceparent(ctx))
	if err != nil {
		return history.Position{}, fmt.Errorf("publish to %s channel: %w", target.Kind, err)
	}
	return p, nil
}
