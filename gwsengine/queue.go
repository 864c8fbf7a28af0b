package gwsengine

import (
	"sync"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/telemetry"
)

// frameOverhead is what gws's write queue holds for a frame besides its bytes: a job closure
// (about 48 bytes) and its deque element (24 bytes, up to twice that while the deque grows);
// a delivery takes two jobs (the frame's and the one that settles it). It counts against the
// send queue limit with the bytes, so a flood of tiny frames (empty pongs) is bounded by the
// limit like a few large ones.
const frameOverhead = 128

// keepCosts is the bookkeeping a connection keeps after its queue empties; a larger array left
// by a burst is released.
const keepCosts = 64

// sendQueue accounts for the frames of one connection handed to gws's write queue and not yet
// written. The limit bounds what waits behind the frame being written (the oldest), not the
// size of one message: a message larger than the limit still goes to a connection that is
// idle, and what comes right behind it queues normally (the epoll engine does the same).
// Deliver callers and the read goroutine admit frames, gws's writer settles them: hence mu.
type sendQueue struct {
	mu    sync.Mutex
	costs []int64 // costs[head:]: each unwritten frame's bytes plus frameOverhead, oldest first
	head  int
	total int64 // sum of costs[head:]
}

// waiting is what counts against the limit; under mu.
func (q *sendQueue) waiting() int64 {
	if q.head == len(q.costs) {
		return 0
	}
	return q.total - q.costs[q.head]
}

// admit takes a frame of cost unless that puts what waits over limit.
func (q *sendQueue) admit(cost, limit int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head < len(q.costs) && q.waiting()+cost > limit {
		return false
	}
	q.costs = append(q.costs, cost)
	q.total += cost
	return true
}

// fits reports whether frames of cost would fit behind what is queued.
func (q *sendQueue) fits(cost, limit int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting()+cost <= limit
}

// settle drops the oldest frame: it is written, or failed. gws's write queue runs jobs one at
// a time in order, so frames settle in the order they were queued.
func (q *sendQueue) settle() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.costs) {
		return
	}
	q.total -= q.costs[q.head]
	q.head++
	switch {
	case q.head == len(q.costs) && cap(q.costs) > keepCosts:
		q.costs, q.head = nil, 0
	case q.head == len(q.costs):
		q.costs, q.head = q.costs[:0], 0
	case q.head >= keepCosts && 2*q.head >= len(q.costs):
		q.costs = q.costs[:copy(q.costs, q.costs[q.head:])]
		q.head = 0
	}
}

// send queues one frame for c behind everything queued before it, under the send queue limit,
// whatever the frame: an echo, a pong, a heartbeat ping, a reply. payload must stay unchanged
// until written. Past the limit c is closed 1013: a client that keeps sending (pings, say) and
// never reads is stopped instead of growing the server without end.
func (c *conn) send(op gws.Opcode, payload []byte) {
	if c.closing() || c.wire.closed.Load() {
		return
	}
	if !c.out.admit(int64(len(payload))+frameOverhead, c.e.sendQueueLimit) {
		c.slow()
		return
	}
	c.socket.Async(func() {
		err := c.socket.WriteMessage(op, payload)
		c.out.settle()
		if err == nil && op <= gws.OpcodeBinary {
			c.e.metrics.MessagesSent.Inc()
		}
	})
}

// slow closes c 1013 (SLOW_CONSUMER) for a frame that did not fit, skipping its queue, and
// counts the frame.
func (c *conn) slow() {
	if c.shut(message.CloseTryAgainLater, c.e.slowConsumer, true) {
		c.e.metrics.Dropped(telemetry.DropSlowConsumer, 1)
	} else {
		c.e.metrics.Dropped(telemetry.DropClosed, 1)
	}
}
