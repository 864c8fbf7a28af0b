package tracing

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/trace"
)

// traceparentLen is the length of a version-00 W3C traceparent:
// "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>".
const traceparentLen = 55

// Traceparent is the W3C traceparent of the span in ctx ("" when there is none), the form a
// message carries through Redis so that every node's delivery span joins the publisher's trace.
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	var b [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// parseTraceparent reads a W3C traceparent (as the history's Redis function checked it: 55
// bytes, version 00) into a remote span context; ok is false for anything else.
func parseTraceparent(b []byte) (sc trace.SpanContext, ok bool) {
	if len(b) != traceparentLen || b[0] != '0' || b[1] != '0' || b[2] != '-' || b[35] != '-' || b[52] != '-' {
		return sc, false
	}
	var (
		tid   trace.TraceID
		sid   trace.SpanID
		flags [1]byte
	)
	if _, err := hex.Decode(tid[:], b[3:35]); err != nil {
		return sc, false
	}
	if _, err := hex.Decode(sid[:], b[36:52]); err != nil {
		return sc, false
	}
	if _, err := hex.Decode(flags[:], b[53:55]); err != nil {
		return sc, false
	}
	sc = trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]), Remote: true,
	})
	return sc, sc.IsValid()
}
