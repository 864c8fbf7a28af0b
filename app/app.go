// Package app is the composition root: it turns a config.Config into a running node by
// building the metrics, token verifier, backplane, engine and HTTP server and wiring them
// together. cmd/websocket-service and the end-to-end tests both start the service through it,
// so what the tests run is what ships.
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
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// App is one node of the service.
type App struct {
	cfg       config.Config
	log       *slog.Logger
	metrics   *telemetry.Metrics
	tracing   *tracing.Tracing
	server    *server.Server
	backplane startable
}

// startable is the part of a backplane that only the composition root uses: starting it,
// and its history, which v2 connections resume from.
type startable interface {
	Start(ctx context.Context) error
	History() history.Reader
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
	m := telemetry.New()
	tr, err := tracing.New(context.Background(), tracing.Options{ServiceName: cfg.ServiceName, Engine: cfg.Engine})
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	a := &App{cfg: cfg, log: log, metrics: m, tracing: tr}
	policy := session.NewPolicy(verifier)
	srv, err := server.New(server.Options{
		Config:   cfg,
		Verifier: verifier,
		Metrics:  m,
		Logger:   log,
		Tracing:  tr,
		NewBackplane: func(sink backplane.Sink) (server.Backplane, error) {
			if cfg.RedisURL == "" {
				bp, err := backplane.NewEmbedded(backplane.EmbeddedOptions{History: cfg.History(), Metrics: m, Logger: log}, sink)
				if err != nil {
					return nil, err
				}
				a.backplane = bp
				return bp, nil
			}
			bp, err := backplane.NewRedis(backplane.RedisOptions{URL: cfg.RedisURL, Cluster: cfg.RedisCluster, History: cfg.History(), Metrics: m, Logger: log}, sink)
			if err != nil {
				return nil, err
			}
			a.backplane = bp
			return bp, nil
		},
		NewEngine: func(hooks session.Hooks) (server.Engine, error) {
			opts := session.Options{
				Shards:            cfg.Shards,
				HeartbeatInterval: cfg.HeartbeatInterval.D(),
				ConnectionTimeout: cfg.ConnectionTimeout.D(),
				MaxMessageSize:    cfg.MaxMessageSize,
				SendQueueLimit:    cfg.SendQueueLimit,
				InboundRate:       cfg.InboundRatePerConnection,
				Policy:            policy,
				Resume: resume.NewService(resume.Options{
					Reader:    a.backplane.History(),
					Topics:    registry.Topics{UserPrefix: cfg.UserChannelPrefix, GroupPrefix: cfg.GroupChannelPrefix, Broadcast: cfg.BroadcastChannel},
					Limit:     cfg.RecoveryMaxMessages,
					NoHistory: cfg.HistorySize == 0,
					Metrics:   m,
				}),
				Hooks:   hooks,
				Metrics: m,
				Logger:  log,
			}
			if cfg.Engine == config.EngineGWS {
				return gwsengine.New(opts)
			}
			return newEpollEngine(opts)
		},
	})
	if err != nil {
		_ = tr.Shutdown(context.Background())
		return nil, err
	}
	a.server = srv
	return a, nil
}

// Server exposes the HTTP layer (for tests).
func (a *App) Server() *server.Server { return a.server }

// Metrics exposes the metrics (for tests).
func (a *App) Metrics() *telemetry.Metrics { return a.metrics }

// Start connects the backplane in the background: a Redis that is down at start is retried
// while readiness reports why (docs/OPERATIONS.md "Lifecycle").
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

// Shutdown drains and stops the node, then exports the spans still buffered (the drain's
// last deliveries among them).
func (a *App) Shutdown(ctx context.Context) error {
	err := a.server.Shutdown(ctx)
	flushCtx, cancel := context.WithTimeout(ctx, tracingFlushTimeout)
	defer cancel()
	return errors.Join(err, a.tracing.Shutdown(flushCtx))
}

// tracingFlushTimeout bounds the export of the last spans at shutdown: an unreachable
// collector must not hold up the exit.
const tracingFlushTimeout = 5 * time.Second
