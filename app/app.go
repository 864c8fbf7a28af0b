// Package app is the composition root: it turns a config.Config into a running node. New
// builds the parts in dependency order: the token verifier, tracing and metrics; the router
// (sequence.Router), which the backplane delivers to; the backplane; server.Members, which
// the engine reports closed connections to; the engine; then the HTTP server over them.
// Start starts the backplane, and Shutdown stops the parts in reverse: the server drains,
// then the engine closes, then the backplane. cmd/websocket-service and the end-to-end tests
// both start the service through it, so what the tests run is what ships.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/gwsengine"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
	"github.com/huleedu/websocket-service/sequence"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// App is one node of the service. It owns its parts: it built them and it closes them.
type App struct {
	cfg       config.Config
	log       *slog.Logger
	metrics   *telemetry.Metrics
	tracing   *tracing.Tracing
	backplane ownedBackplane
	engine    server.Engine
	server    *server.Server
}

// ownedBackplane is a backplane as its owner sees it: what the server uses, and also starting
// it, its history (gap repair and v2 resume read it) and closing it.
type ownedBackplane interface {
	server.Backplane
	Start(ctx context.Context) error
	History() history.Reader
	Close() error
}

// NewVerifier builds the token verifier the configuration describes.
func NewVerifier(cfg config.Config) (*auth.Verifier, error) {
	v, err := auth.NewVerifier(auth.Settings{
		Algorithm:    cfg.JWTAlgorithm,
		Secret:       []byte(cfg.JWTSecretKey),
		PublicKeyPEM: cfg.JWTPublicKeyPEM,
		Issuer:       cfg.JWTIssuer,
		Audience:     cfg.JWTAudience,
		GroupsClaim:  cfg.JWTGroupsClaim,
		Leeway:       5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("%sJWT_PUBLIC_KEY/JWT_ALGORITHM: %w", config.Prefix, err)
	}
	return v, nil
}

// New builds a node from cfg. Nothing listens or connects until Start.
func New(cfg config.Config, log *slog.Logger) (*App, error) {
	verifier, err := NewVerifier(cfg)
	if err != nil {
		return nil, err
	}
	tr, err := tracing.New(context.Background(), tracing.Options{ServiceName: cfg.ServiceName, Engine: cfg.Engine})
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	a := &App{cfg: cfg, log: log, metrics: telemetry.New(), tracing: tr}
	if err := a.build(verifier); err != nil {
		_ = tr.Shutdown(context.Background())
		return nil, err
	}
	return a, nil
}

// build makes the parts, each after those it needs. Messages flow Redis → backplane → router
// (gap repair, docs/DESIGN.md) → engine; the router exists first because the backplane
// delivers to it, and learns the backplane's history and the engine as they are built
// (nothing is delivered before Start).
func (a *App) build(verifier *auth.Verifier) error {
	cfg, m, log := a.cfg, a.metrics, a.log
	topics := registry.Topics{UserPrefix: cfg.UserChannelPrefix, GroupPrefix: cfg.GroupChannelPrefix, Broadcast: cfg.BroadcastChannel}
	router := sequence.New(sequence.Options{Topics: topics, Limit: cfg.RecoveryMaxMessages, Metrics: m, Logger: log, Tracing: a.tracing}, nil)
	bp, err := newBackplane(cfg, router, m, log)
	if err != nil {
		return fmt.Errorf("backplane: %w", err)
	}
	router.SetHistory(bp.History())
	members := server.NewMembers(topics, registry.NewLimits(cfg.MaxConnections, cfg.MaxConnectionsPerUser), bp, m, log)
	eng, err := newEngine(cfg, session.Options{
		Shards:            cfg.Shards,
		HeartbeatInterval: cfg.HeartbeatInterval.D(),
		ConnectionTimeout: cfg.ConnectionTimeout.D(),
		MaxMessageSize:    cfg.MaxMessageSize,
		SendQueueLimit:    cfg.SendQueueLimit,
		InboundRate:       cfg.InboundRatePerConnection,
		Policy:            session.NewPolicy(verifier),
		Resume:            resume.NewService(resume.Options{Reader: bp.History(), Topics: topics, Limit: cfg.RecoveryMaxMessages, NoHistory: cfg.HistorySize == 0, Metrics: m}),
		Hooks:             members,
		Metrics:           m,
		Logger:            log,
	})
	if err != nil {
		_ = bp.Close()
		return fmt.Errorf("engine %s: %w", cfg.Engine, err)
	}
	router.SetEngine(eng)
	a.backplane, a.engine = bp, eng
	a.server = server.New(server.Options{
		Config:    cfg,
		Verifier:  verifier,
		Metrics:   m,
		Logger:    log,
		Tracing:   a.tracing,
		Members:   members,
		Backplane: bp,
		Engine:    eng,
	})
	return nil
}

// newBackplane builds the backplane cfg names, delivering to sink: embedded without a Redis
// URL, else Redis.
func newBackplane(cfg config.Config, sink backplane.Sink, m *telemetry.Metrics, log *slog.Logger) (ownedBackplane, error) {
	if cfg.RedisURL == "" {
		bp, err := backplane.NewEmbedded(backplane.EmbeddedOptions{History: cfg.History(), Metrics: m, Logger: log}, sink)
		if err != nil {
			return nil, err
		}
		return bp, nil
	}
	bp, err := backplane.NewRedis(backplane.RedisOptions{URL: cfg.RedisURL, Cluster: cfg.RedisCluster, History: cfg.History(), Metrics: m, Logger: log}, sink)
	if err != nil {
		return nil, err
	}
	return bp, nil
}

// newEngine builds the engine cfg names.
func newEngine(cfg config.Config, opts session.Options) (server.Engine, error) {
	if cfg.Engine == config.EngineGWS {
		return gwsengine.New(opts)
	}
	return newEpollEngine(opts)
}

// Server exposes the HTTP layer (for tests).
func (a *App) Server() *server.Server { return a.server }

// Metrics exposes the metrics (for tests).
func (a *App) Metrics() *telemetry.Metrics { return a.metrics }

// Start connects the backplane in the background: a Redis that is down at start is retried
// while readiness reports why (docs/OPERATIONS.md "Lifecycle"). The engine runs from New, and the server
// once Serve is called.
func (a *App) Start(ctx context.Context) error {
	if err := a.backplane.Start(ctx); err != nil {
		return fmt.Errorf("start backplane: %w", err)
	}
	return nil
}

// Serve serves on ln until Shutdown.
func (a *App) Serve(ln net.Listener) error { return a.server.Serve(ln) }

// Listen opens the configured address.
func (a *App) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", a.cfg.Addr())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a.cfg.Addr(), err)
	}
	return ln, nil
}

// Shutdown stops the node in the reverse order of New: the server drains (docs/OPERATIONS.md:
// not ready, no new upgrades, connections closed with 1001 over the drain window), the engine
// closes whatever connections remain, and the backplane unsubscribes and closes its
// connections; every step runs even if one before failed. Last it exports the spans still
// buffered (the drain's last deliveries among them).
func (a *App) Shutdown(ctx context.Context) error {
	errs := []error{a.server.Shutdown(ctx)}
	if err := a.engine.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine close: %w", err))
	}
	if err := a.backplane.Close(); err != nil {
		errs = append(errs, fmt.Errorf("backplane close: %w", err))
	}
	flushCtx, cancel := context.WithTimeout(ctx, tracingFlushTimeout)
	defer cancel()
	errs = append(errs, a.tracing.Shutdown(flushCtx))
	return errors.Join(errs...)
}

// tracingFlushTimeout bounds the export of the last spans at shutdown: an unreachable
// collector must not hold up the exit.
const tracingFlushTimeout = 5 * time.Second
