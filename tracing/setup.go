package tracing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation is the name the service's spans are recorded under.
const instrumentation = "github.com/huleedu/websocket-service"

// Options are what the service knows about itself; everything about where and how spans go
// comes from OTEL_* variables.
type Options struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME (or service.name in
	// OTEL_RESOURCE_ATTRIBUTES) says otherwise.
	ServiceName string
	Engine      string
	// Getenv reads the environment; nil means os.Getenv. The OTLP exporters and the SDK's
	// sampler and batch settings always read the process environment themselves.
	Getenv func(string) string
}

// Tracing is the node's tracer. The zero of its pointer is not usable: New always returns
// one, with a no-op tracer when tracing is off.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil when off
	tracer   trace.Tracer
	prop     propagation.TraceContext
	on       bool
}

// Off is a Tracing that records nothing.
func Off() *Tracing {
	return &Tracing{tracer: noop.NewTracerProvider().Tracer(instrumentation)}
}

// New builds the tracer the OTEL_* variables describe: off when no OTLP endpoint is set, when
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none; an OTLP exporter over http/protobuf
// (the default) or grpc (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL) otherwise, batching spans, with
// the sampler of OTEL_TRACES_SAMPLER[_ARG] (default parentbased_always_on).
func New(ctx context.Context, o Options) (*Tracing, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return Off(), nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "", "otlp":
	case "none":
		return Off(), nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", exp)
	}
	if getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return Off(), nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exporter sdktrace.SpanExporter
		err      error
	)
	switch strings.TrimSpace(protocol) {
	case "", "http/protobuf":
		exporter, err = otlptracehttp.New(ctx)
	case "grpc":
		exporter, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", o.ServiceName),
			attribute.String("service.instance.id", instanceID()),
			attribute.String("ws.engine", o.Engine),
		),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exporter.Shutdown(ctx)
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The sampler (OTEL_TRACES_SAMPLER[_ARG]) and the batch settings (OTEL_BSP_*) are read from
	// the environment by the SDK itself.
	p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return &Tracing{provider: p, tracer: p.Tracer(instrumentation), on: true}, nil
}

// instanceID tells this process's spans from its siblings' (service.instance.id); the host
// name alone does not when several nodes share a host.
func instanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.on }

// Tracer is the tracer spans are started with (no-op when off).
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Shutdown exports the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}

// Extract returns ctx carrying the remote span context of a W3C traceparent header in h, if
// there is a valid one. It works with tracing off too, so a node that records nothing still
// passes a publisher's trace on to the nodes that do.
func (t *Tracing) Extract(ctx context.Context, h propagation.TextMapCarrier) context.Context {
	return t.prop.Extract(ctx, h)
}
