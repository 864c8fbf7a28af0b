package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/huleedu/websocket-service/app"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/tracing"
)

func newLogger(cfg config.Config) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToUpper(cfg.LogLevel) {
	case "DEBUG":
		level = slog.LevelDebug
	case "WARNING", "WARN":
		level = slog.LevelWarn
	case "ERROR":
		level = slog.LevelError
	}
	h := slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: level})
	return slog.New(tracing.LogHandler(h)).With("service", cfg.ServiceName, "environment", cfg.Environment)
}

// serve runs the node until SIGTERM or SIGINT, then drains it (docs/OPERATIONS.md
// "Lifecycle") and exits 0.
func serve(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "serve takes no arguments; configure it with WEBSOCKET_SERVICE_* variables\n")
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(cfg)
	// go-redis logs pool dial failures through its own process-wide logger in plain text;
	// route them into the JSON log so an outage reads as one stream.
	redis.SetLogger(redisLog{log.With("component", "go-redis")})
	// Likewise the OpenTelemetry SDK reports failed span exports (a collector that is down)
	// through its process-wide error handler, in plain text unless told otherwise.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: the OpenTelemetry SDK reports an error", "component", "otel", "err", err)
	}))
	node, err := app.New(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := node.Start(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ln, err := node.Listen()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log.Info("listening", "addr", ln.Addr().String(), "engine", cfg.Engine, "shards", cfg.Shards,
		"backplane", backplaneName(cfg), "version", version)

	served := make(chan error, 1)
	go func() { served <- node.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-served:
		log.Error("server stopped", "err", err)
		return 1
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	}
	signal.Stop(sig)
	if err := node.Shutdown(context.Background()); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	if err := <-served; err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// redisLog adapts slog to go-redis's logger interface.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...))
}

func backplaneName(cfg config.Config) string {
	switch {
	case cfg.RedisURL == "":
		return "embedded"
	case cfg.RedisCluster:
		return "redis-cluster"
	}
	return "redis"
}
