package tracing

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/huleedu/websocket-service/history"
)

// Drop is why a traced message did not reach a recipient.
type Drop uint8

// Reasons a delivery span counts (attribute ws.dropped.<reason>).
const (
	DropClosed       Drop = iota // the connection was already closing
	DropSlowConsumer             // the connection went over SEND_QUEUE_LIMIT and was closed 1013
	DropRefused                  // the payload could not be framed (not UTF-8, too large)
	DropShardStopped             // a shard stopped before applying it (counts shards, not connections)
	numDrops
)

var dropAttrs = [numDrops]attribute.Key{
	DropClosed:       "ws.dropped.closed",
	DropSlowConsumer: "ws.dropped.slow_consumer",
	DropRefused:      "ws.dropped.refused",
	DropShardStopped: "ws.dropped.shard_stopped",
}

// Delivery is the report of one sampled message's fan-out on this node: the engines' shards
// add their counts to it concurrently and release their hold when they are done with the
// message; the last release ends the span. It rides on registry.Delivery.Trace, which is nil
// for every message that is not traced, so the fan-out path pays a nil check and nothing else.
//
// What "done" means differs by engine (docs/OPERATIONS.md, "Tracing"): the epoll engine's
// shard is done after the write pass that follows applying the message (bytes a socket would
// not take stay queued for EPOLLOUT and are not waited for); the gws engine's hold is per
// recipient and released when gws has written the frame to that socket (or failed to).
type Delivery struct {
	ctx        context.Context
	span       trace.Span
	holds      atomic.Int64
	recipients atomic.Int64
	queued     atomic.Int64
	dropped    [numDrops]atomic.Int64
}

// Context carries the delivery span, for log lines about this message.
func (d *Delivery) Context() context.Context {
	if d == nil {
		return context.Background()
	}
	return d.ctx
}

// Hold adds n holders: the span ends when each has called Release.
func (d *Delivery) Hold(n int) { d.holds.Add(int64(n)) }

// Release drops one hold; the last ends the span with the counts gathered.
func (d *Delivery) Release() {
	if d.holds.Add(-1) != 0 {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 2+numDrops)
	attrs = append(attrs,
		attribute.Int64("ws.recipients", d.recipients.Load()),
		attribute.Int64("ws.queued", d.queued.Load()))
	for i := range d.dropped {
		if n := d.dropped[i].Load(); n > 0 {
			attrs = append(attrs, attribute.Int64(string(dropAttrs[i]), n))
		}
	}
	d.span.SetAttributes(attrs...)
	d.span.End()
}

// Recipients counts connections the message addresses on this node.
func (d *Delivery) Recipients(n int) { d.recipients.Add(int64(n)) }

// Queued counts connections the frame was queued to for writing.
func (d *Delivery) Queued(n int) { d.queued.Add(int64(n)) }

// Dropped counts n recipients (shards, for DropShardStopped) the message did not reach.
func (d *Delivery) Dropped(why Drop, n int) { d.dropped[why].Add(int64(n)) }

// Receive traces one batch the backplane handed to the node: a span for the batch, made when
// the batch holds a sampled message, and a delivery span for each sampled message in it. Nil
// when tracing is off; its methods are then not to be called.
type Receive struct {
	t      *Tracing
	start  time.Time
	size   int
	span   trace.Span // backplane.receive; nil until a message is sampled
	traced []*Delivery
}

// Receive starts tracing a batch of size messages; nil when tracing is off (or t is nil).
func (t *Tracing) Receive(size int) *Receive {
	if t == nil || !t.on {
		return nil
	}
	return &Receive{t: t, start: time.Now(), size: size}
}

// Delivery starts the delivery span of one message if the sampler keeps it, in the
// publisher's trace when the message carries a traceparent (else in a new trace), and returns
// its report with one hold, which End releases; nil when the message is not sampled. The
// batch's first sampled message gets the receive span between its publisher and its delivery
// span; later ones link to it.
func (r *Receive) Delivery(traceparent []byte, channel, kind string, pos history.Position) *Delivery {
	ctx := context.Background()
	if sc, ok := parseTraceparent(traceparent); ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(r.start)}
	if r.span == nil {
		rctx, span := r.t.tracer.Start(ctx, "backplane.receive", opts...)
		if !span.IsRecording() {
			return nil
		}
		r.span, ctx = span, rctx
	} else {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: r.span.SpanContext()}))
	}
	ctx, span := r.t.tracer.Start(ctx, "ws.deliver", opts...)
	if !span.IsRecording() {
		return nil
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "redis"),
		attribute.String("messaging.destination.name", channel),
		attribute.String("ws.stream.kind", kind),
	}
	if !pos.IsZero() {
		attrs = append(attrs, attribute.String("ws.cursor", pos.Cursor()), attribute.Int64("ws.seq", int64(pos.Seq)))
	}
	span.SetAttributes(attrs...)
	d := &Delivery{ctx: ctx, span: span}
	d.holds.Store(1)
	r.traced = append(r.traced, d)
	return d
}

// End is called once the batch has been handed to the engine: it ends the receive span (from
// the batch's arrival to the hand-off, which includes any wait for room in the shards'
// queues) and releases the hold each delivery span was started with.
func (r *Receive) End() {
	if r.span == nil {
		return
	}
	r.span.SetAttributes(attribute.Int("messaging.batch.message_count", r.size), attribute.Int("ws.traced", len(r.traced)))
	r.span.End()
	for _, d := range r.traced {
		d.Release()
	}
}
