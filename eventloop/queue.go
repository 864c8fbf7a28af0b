//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// shardQueueBytes bounds the delivery bytes a shard has queued and not yet applied. Deliver
// waits while a shard is at the bound, which blocks the backplane's reader goroutine, so the
// relay stops reading Redis and Redis's own `client-output-buffer-limit pubsub` takes effect
// (it disconnects a subscriber that falls too far behind; the relay reconnects and the node
// repairs the gap from history) instead of this process buffering without limit. 4 MiB is
// 64 maximum-size (64 KiB) messages, or tens of thousands of typical small notifications:
// bursts fit, while with the default of one shard per core the whole engine stays within a
// few tens of MiB, below Redis's default 32 MiB hard limit per subscriber connection.
const shardQueueBytes = 4 << 20

// deliveryOverhead is counted per delivery on top of its payload (its Delivery value, and its
// share of the batch and of the task queue), so a flood of empty payloads is bounded too.
const deliveryOverhead = 64

// batchBytes is what a delivery batch counts against a shard's queue bound.
func batchBytes(batch []registry.Delivery) int64 {
	n := int64(len(batch)) * deliveryOverhead
	for i := range batch {
		n += int64(len(batch[i].Payload))
	}
	return n
}

// submitDelivery queues a batch of size bytes (batchBytes). queueTask first waits, without
// holding the lock (sync.Cond.Wait releases it), while the shard's queued bytes are at its
// bound; that is never a wait on a socket, since the shard drains its queue without blocking.
// It returns false, and counts the batch dropped, when the shard has stopped (before or while
// it waited): a stopped or failed shard never blocks Deliver.
func (l *loop) submitDelivery(batch []registry.Delivery, size int64) bool {
	if l.submit(task{kind: taskDeliver, batch: batch, size: size}) {
		return true
	}
	l.e.metrics.Dropped(telemetry.DropShardStopped, len(batch))
	return false
}

// awaitRoom waits, with l.mu held on entry and on return, until the shard's queue is below its
// bound or the shard has stopped.
func (l *loop) awaitRoom() {
	for !l.stopped && l.queued.Load() >= l.queueLimit {
		l.room.Wait()
	}
}

// applied gives back the bytes of delivery batches the loop has applied and lets waiting
// Deliver calls go on.
func (l *loop) applied(size int64) {
	if size == 0 {
		return
	}
	l.mu.Lock()
	l.queued.Add(-size)
	l.mu.Unlock()
	l.room.Broadcast()
}

// dropQueued counts the deliveries of tasks a stopping shard will never apply and frees their
// bytes; l.mu is held.
func (l *loop) dropQueued(tasks []task) {
	for i := range tasks {
		if tasks[i].kind == taskDeliver {
			l.e.metrics.Dropped(telemetry.DropShardStopped, len(tasks[i].batch))
			l.queued.Add(-tasks[i].size)
		}
	}
	l.room.Broadcast()
}
