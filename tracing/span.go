package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Shard records, on the upgrade span in ctx, the engine shard a connection was placed on.
// Off, or for an unsampled upgrade, it costs a context lookup.
func Shard(ctx context.Context, shard int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.Int("ws.shard", shard))
	}
}
