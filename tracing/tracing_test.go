package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

func TestTraceparentRoundTrip(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	sc, ok := parseTraceparent([]byte(tp))
	if !ok || !sc.IsRemote() || !sc.IsSampled() {
		t.Fatalf("parse %s: %v %v", tp, sc, ok)
	}
	if got := Traceparent(trace.ContextWithSpanContext(context.Background(), sc)); got != tp {
		t.Fatalf("Traceparent = %s, want %s", got, tp)
	}
	for _, bad := range []string{"", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x"} {
		if _, ok := parseTraceparent([]byte(bad)); ok {
			t.Errorf("parse %q: accepted", bad)
		}
	}
	if Traceparent(context.Background()) != "" {
		t.Error("Traceparent without a span is not empty")
	}
}

func TestLogLinesCarryTheActiveSpan(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "x")
	sc, _ := parseTraceparent([]byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "traced")
	log.Info("plain")
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	var traced, plain map[string]any
	if len(lines) != 2 || json.Unmarshal(lines[0], &traced) != nil || json.Unmarshal(lines[1], &plain) != nil {
		t.Fatalf("log output %s", buf.String())
	}
	if traced["trace_id"] != "0af7651916cd43dd8448eb211c80319c" || traced["span_id"] != "b7ad6b7169203331" || traced["service"] != "x" {
		t.Errorf("traced line %v", traced)
	}
	if _, ok := plain["trace_id"]; ok {
		t.Errorf("untraced line %v has a trace_id", plain)
	}
}

func TestOffWithoutAnEndpoint(t *testing.T) {
	env := map[string]string{}
	tr, err := New(context.Background(), Options{Getenv: func(k string) string { return env[k] }})
	if err != nil || tr.Enabled() || tr.Receive(1) != nil {
		t.Fatalf("no endpoint: %v, enabled %v", err, tr.Enabled())
	}
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
	if _, err := New(context.Background(), Options{Getenv: func(k string) string { return env[k] }}); err == nil {
		t.Fatal("http/json accepted")
	}
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
	env["OTEL_TRACES_EXPORTER"] = "none"
	if tr, err := New(context.Background(), Options{Getenv: func(k string) string { return env[k] }}); err != nil || tr.Enabled() {
		t.Fatalf("OTEL_TRACES_EXPORTER=none: %v, enabled %v", err, tr.Enabled())
	}
}

// OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports to an OTLP/gRPC collector at the endpoint the
// environment names.
func TestGRPCExporterFromTheEnvironment(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, collector{got: got})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	tr, err := New(context.Background(), Options{ServiceName: "s"})
	if err != nil || !tr.Enabled() {
		t.Fatalf("grpc: %v, enabled %v", err, tr != nil && tr.Enabled())
	}
	_, span := tr.Tracer().Start(context.Background(), "over-grpc")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-got:
		if name != "over-grpc" {
			t.Fatalf("collector received span %q", name)
		}
	default:
		t.Fatal("the gRPC collector received nothing by the end of Shutdown")
	}
}

type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	got chan string
}

func (c collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				c.got <- sp.GetName()
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}
