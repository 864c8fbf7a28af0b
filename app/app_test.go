package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// steps records the lifecycle calls the parts of a node receive, in order.
type steps []string

// stepEngine is a server.Engine that records Drain and Close.
type stepEngine struct {
	steps              *steps
	drainErr, closeErr error
}

func (e *stepEngine) Accept(http.ResponseWriter, *http.Request, session.Admission) error { return nil }
func (e *stepEngine) Reject(http.ResponseWriter, *http.Request, string, string, uint16)  {}
func (e *stepEngine) Deliver([]registry.Delivery)                                        {}
func (e *stepEngine) Drain(context.Context, time.Duration) error {
	*e.steps = append(*e.steps, "drain")
	return e.drainErr
}
func (e *stepEngine) Close() error {
	*e.steps = append(*e.steps, "engine close")
	return e.closeErr
}

// stepBackplane is an ownedBackplane that records Start and Close.
type stepBackplane struct {
	steps    *steps
	closeErr error
}

func (b *stepBackplane) Subscribe(context.Context, []string) error { return nil }
func (b *stepBackplane) Unsubscribe([]string)                      {}
func (b *stepBackplane) PublishSequenced(context.Context, string, []byte, string) (history.Position, error) {
	return history.Position{}, nil
}
func (b *stepBackplane) Ready() error            { return nil }
func (b *stepBackplane) History() history.Reader { return nil }
func (b *stepBackplane) Start(context.Context) error {
	*b.steps = append(*b.steps, "backplane start")
	return nil
}
func (b *stepBackplane) Close() error {
	*b.steps = append(*b.steps, "backplane close")
	return b.closeErr
}

// node assembles an App over recording parts, as build does over real ones.
func node(t *testing.T, eng *stepEngine, bp *stepBackplane) *App {
	t.Helper()
	cfg, err := config.FromMap(map[string]string{config.Prefix + "JWT_SECRET_KEY": "app-test-secret-app-test-secret-app", config.Prefix + "ENGINE": "gws"})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, log := telemetry.New(), slog.New(slog.NewTextHandler(io.Discard, nil))
	members := server.NewMembers(registry.Topics{}, registry.NewLimits(0, 0), bp, m, log)
	srv := server.New(server.Options{Config: cfg, Verifier: verifier, Metrics: m, Logger: log, Members: members, Backplane: bp, Engine: eng})
	return &App{cfg: cfg, log: log, metrics: m, tracing: tracing.Off(), backplane: bp, engine: eng, server: srv}
}

func TestShutdownDrainsThenClosesTheEngineThenTheBackplane(t *testing.T) {
	var got steps
	a := node(t, &stepEngine{steps: &got}, &stepBackplane{steps: &got})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(got, ", "); s != "backplane start, drain, engine close, backplane close" {
		t.Fatalf("lifecycle: %s", s)
	}
}

func TestShutdownClosesEverythingWhenAStepFailsAndReportsEachFailure(t *testing.T) {
	var got steps
	drainErr, engineErr, bpErr := errors.New("drain late"), errors.New("engine stuck"), errors.New("redis gone")
	a := node(t, &stepEngine{steps: &got, drainErr: drainErr, closeErr: engineErr}, &stepBackplane{steps: &got, closeErr: bpErr})
	err := a.Shutdown(context.Background())
	for _, want := range []error{drainErr, engineErr, bpErr} {
		if !errors.Is(err, want) {
			t.Errorf("Shutdown's error %v does not carry %v", err, want)
		}
	}
	if s := strings.Join(got, ", "); s != "drain, engine close, backplane close" {
		t.Fatalf("lifecycle: %s", s)
	}
}
