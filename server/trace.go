package server

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
)

// Spans of the HTTP layer (docs/OPERATIONS.md, "Tracing"). With tracing off they are no-op
// spans taken from the request's context, and nothing is allocated for them.

// traceUpgrade starts the span of one upgrade. It is always a new trace: the client is not
// trusted to choose sampling for the node (a browser cannot send a traceparent on a WebSocket
// anyway). The engine adds the shard to it through the request's context.
func (s *Server) traceUpgrade(r *http.Request) (*http.Request, trace.Span) {
	if !s.tracing.Enabled() {
		return r, trace.SpanFromContext(r.Context())
	}
	ctx, span := s.tracing.Tracer().Start(r.Context(), "ws.upgrade",
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("ws.engine", s.cfg.Engine))
		if origin := r.Header.Get("Origin"); origin != "" {
			span.SetAttributes(attribute.String("http.request.header.origin", origin))
		}
	}
	return r.WithContext(ctx), span
}

// connection counts an upgrade's result (a telemetry.Result* constant) and records it on its
// span, with the error code a refused client was sent, if any.
func (s *Server) connection(span trace.Span, result, code string) {
	s.metrics.Connection(result)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("ws.upgrade.result", result))
		if code != "" {
			span.SetAttributes(attribute.String("ws.error.code", code))
		}
	}
}

// tracePublish starts the span of one POST /api/publish, in the caller's trace when the
// request carries a W3C traceparent header. The context it returns carries the span (or, with
// tracing off, the caller's span context), which the message then takes through Redis.
func (s *Server) tracePublish(r *http.Request) (context.Context, trace.Span) {
	ctx := s.tracing.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	if !s.tracing.Enabled() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return s.tracing.Tracer().Start(ctx, "POST "+PathPublish, trace.WithSpanKind(trace.SpanKindServer))
}

// publishTraced records what was published: the stream's kind (never a user id), the payload's
// size, and its position; or the error.
func publishTraced(span trace.Span, target registry.Target, payload []byte, pos history.Position, err error) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("ws.stream.kind", target.Kind.String()),
		attribute.Int("ws.payload.bytes", len(payload)))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return
	}
	span.SetAttributes(attribute.String("ws.cursor", pos.Cursor()), attribute.Int64("ws.seq", int64(pos.Seq)))
}

// httpStatus records the response status on span.
func httpStatus(span trace.Span, status int) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
}

// statusWriter remembers the status of a traced response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}
