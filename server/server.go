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
	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/sequence"
	"github.com/huleedu/websocket-service/session"
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

// Options are what New needs. The engine and backplane are built by New through their
// factories, because each needs a piece of the server: the backplane delivers to the server's
// router, and the engine reports closed connections to the server's hooks.
type Options struct {
	Config       config.Config
	Verifier     TokenVerifier
	Metrics      *telemetry.Metrics
	Logger       *slog.Logger
	Tracing      *tracing.Tracing // nil: off
	NewBackplane func(sink backplane.Sink) (Backplane, error)
	NewEngine    func(hooks session.Hooks) (Engine, error)
}

// Server is the HTTP layer of one node.
type Server struct {
	cfg       config.Config
	verifier  TokenVerifier
	metrics   *telemetry.Metrics
	log       *slog.Logger
	tracing   *tracing.Tracing
	topics    registry.Topics
	limits    *registry.Limits
	rate      *ipRate // nil when HANDSHAKE_RATE_PER_IP is 0
	engine    Engine
	backplane Backplane
	router    *sequence.Router
	http      *http.Server
	draining  atomic.Bool
}

// New builds the server, its backplane and its engine.
func New(o Options) (*Server, error) {
	c := o.Config
	s := &Server{
		cfg:      c,
		verifier: o.Verifier,
		metrics:  o.Metrics,
		log:      o.Logger,
		tracing:  o.Tracing,
		topics:   registry.Topics{UserPrefix: c.UserChannelPrefix, GroupPrefix: c.GroupChannelPrefix, Broadcast: c.BroadcastChannel},
		limits:   registry.NewLimits(c.MaxConnections, c.MaxConnectionsPerUser),
	}
	if s.tracing == nil {
		s.tracing = tracing.Off()
	}
	if c.HandshakeRatePerIP > 0 {
		s.rate = newIPRate(c.HandshakeRatePerIP)
	}
	// Redis → backplane → router (gap repair, docs/DESIGN.md) → engine.
	s.router = sequence.New(sequence.Options{Topics: s.topics, Limit: c.RecoveryMaxMessages, Metrics: o.Metrics, Logger: o.Logger,
		Tracing: s.tracing}, nil)
	bp, err := o.NewBackplane(s.router)
	if err != nil {
		return nil, fmt.Errorf("backplane: %w", err)
	}
	eng, err := o.NewEngine(s)
	if err != nil {
		_ = bp.Close()
		return nil, fmt.Errorf("engine %s: %w", c.Engine, err)
	}
	s.backplane, s.engine = bp, eng
	s.router.SetHistory(bp.History())
	s.router.SetEngine(eng)

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
	return s, nil
}

// Handler is the server's HTTP handler (for tests that bring their own listener).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve serves HTTP on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown drains the node as docs/OPERATIONS.md "Lifecycle" says: not ready at once, no new
// upgrades, every connection closed with 1001 spread over the drain window, then the
// backplane's subscriptions and connections closed. Health and readiness keep answering
// meanwhile, so the orchestrator sees the node draining rather than dead.
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
	if err := s.engine.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine close: %w", err))
	}
	if err := s.backplane.Close(); err != nil {
		errs = append(errs, fmt.Errorf("backplane close: %w", err))
	}
	return errors.Join(errs...)
}

// Closed is the engines' hook for a connection that ended: it gives back what the upgrade
// took (subscriptions, limit slots) and counts the disconnect.
func (s *Server) Closed(id *session.Identity, code uint16) {
	s.backplane.Unsubscribe(s.topics.Channels(id.User, id.Groups))
	s.limits.ReleaseUser(id.User)
	s.limits.ReleaseNode()
	s.metrics.Disconnect(code)
}

// Join is the engines' hook for a token refresh that added groups: it subscribes their
// channels without holding up the engine (a shard goroutine must never wait for the
// backplane) and calls done once they are live, or once subscribeTimeout has passed; the
// references are kept either way, as the backplane subscribes them when it can.
func (s *Server) Join(groups []string, done func()) {
	channels := s.groupChannels(groups)
	go func() {
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
		defer cancel()
		if err := s.backplane.Subscribe(ctx, channels); err != nil {
			s.log.Warn("token refresh: subscribing added groups not confirmed", "groups", len(groups), "err", err)
		}
	}()
}

// Leave is the engines' hook for groups a connection no longer has.
func (s *Server) Leave(groups []string) {
	if len(groups) > 0 {
		s.backplane.Unsubscribe(s.groupChannels(groups))
	}
}

func (s *Server) groupChannels(groups []string) []string {
	out := make([]string, len(groups))
	for i, g := range groups {
		out[i] = s.topics.GroupChannel(g)
	}
	return out
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
