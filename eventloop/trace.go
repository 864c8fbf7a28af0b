package eventloop

import (
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/tracing"
)

// A traced delivery (registry.Delivery.Trace, set only for messages the tracer sampled) is
// held once per shard from Deliver on. A shard adds what it did with the message and releases
// its hold after the write pass that follows applying it (flushDirty), so the delivery span
// ends once every shard has queued the frame to each target and written what the sockets
// would take; bytes left for EPOLLOUT are not waited for. A shard that never applies it
// releases its hold counting itself as a shard_stopped drop.

// holdTraces takes shards holds on each traced delivery of batch.
func holdTraces(batch []registry.Delivery, shards int) {
	for i := range batch {
		if t := batch[i].Trace; t != nil {
			t.Hold(shards)
		}
	}
}

// abandonTraces releases one shard's holds on the traced deliveries of a batch it will not
// apply.
func abandonTraces(batch []registry.Delivery) {
	for i := range batch {
		if t := batch[i].Trace; t != nil {
			t.Dropped(tracing.DropShardStopped, 1)
			t.Release()
		}
	}
}

// traceApplied records what the shard did with one traced delivery: of its targets, queued
// got the frame, closed were already closing and doomed went over the send queue limit (the
// rest are v2 connections still resuming, which hold it back for after their replay). The
// hold is released after the write pass (releaseTraced).
func (l *loop) traceApplied(t *tracing.Delivery, targets, queued, closed, doomed int) {
	t.Recipients(targets)
	t.Queued(queued)
	if closed > 0 {
		t.Dropped(tracing.DropClosed, closed)
	}
	if doomed > 0 {
		t.Dropped(tracing.DropSlowConsumer, doomed)
	}
	l.traced = append(l.traced, t)
}

// releaseTraced ends the shard's part of the traced deliveries applied since the last write
// pass.
func (l *loop) releaseTraced() {
	for i, t := range l.traced {
		t.Release()
		l.traced[i] = nil
	}
	l.traced = l.traced[:0]
}
