// Package tracing is the service's OpenTelemetry tracing: a tracer provider with an OTLP
// exporter configured only by the standard OTEL_* environment variables, the per-message
// delivery report the engines fill in, W3C traceparent handling for messages that crossed
// Redis, and a log handler that stamps trace_id/span_id on JSON log lines.
//
// Tracing is off unless an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Off, a Tracing hands out no-op spans and the fan-out
// path pays one nil check per message: a registry.Delivery's Trace is nil. On, a delivery span
// is made only for messages the sampler keeps, and there is one per message per node, never
// one per connection (docs/OPERATIONS.md, "Tracing").
package tracing
