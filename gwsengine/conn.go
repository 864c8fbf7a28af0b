package gwsengine

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
	"github.com/huleedu/websocket-service/tracing"
)

// closeGrace bounds how long a closing connection may take: the writes still queued when the
// server decides to close, and the wait for the peer's close frame after ours.
const closeGrace = time.Second

// conn is one accepted connection. gws drives its socket from two places: the read goroutine
// (gws ReadLoop, which calls the engine's events) and gws's per-socket write queue. What the
// engine adds lives here and is safe to touch from the read goroutine, the shard's ticker and
// any Deliver caller: id, shard, socket and wire are immutable after Accept, except id.Groups,
// which a token refresh changes under the shard's mu; ended is guarded by mu; nextPing belongs
// to the shard's ticker; in belongs to the read goroutine; the rest is atomic.
type conn struct {
	e      *Engine
	shard  *shard
	id     session.Identity
	socket *gws.Conn
	wire   *wire

	out     sendQueue     // frames handed to gws's write queue and not yet written (queue.go)
	settled func()        // settles a delivery once gws has written it; made once, in Accept
	expires atomic.Int64  // token expiry, unix nanoseconds
	code    atomic.Uint32 // close code the server chose; 0 while the server has not begun a close
	done    chan struct{} // closed once the socket is released

	// mu orders an urgent close's wg.Add before the read loop's wg.Done: once ended is set,
	// the read loop's count may be gone and nobody may add to the engine's WaitGroup for c.
	mu    sync.Mutex
	ended bool

	nextPing int64 // unix nanoseconds; owned by the shard's ticker

	in        session.Inbound // owned by the read goroutine (inbound.go)
	refreshes atomic.Uint32   // verified token refreshes; a pending regroup applies only if it is the last

	v2 *v2conn // notifications.v2 state (v2.go); nil for v1
}

// closing reports whether the server has begun closing c.
func (c *conn) closing() bool { return c.code.Load() != 0 }

// shut begins a server-initiated close: reply (an ErrorMessage, say) as a text frame, then a
// close frame with code. Only the first call has an effect; it reports whether it was the
// first. Frames already queued go first unless urgent, in which case the queue is skipped, as
// for a slow consumer whose queue is the problem. Either way every pending write is bounded by
// closeGrace from now, so a peer that stopped reading cannot hold the close up.
func (c *conn) shut(code uint16, reply []byte, urgent bool) bool {
	if !c.code.CompareAndSwap(0, uint32(code)) {
		return false
	}
	// The reply and close frame are what the client must see, but they never go on top of a
	// full queue: if they would not fit behind it, the queue is skipped, as for a slow
	// consumer, and the server holds no more for c than the limit allows.
	urgent = urgent || !c.out.fits(int64(len(reply))+2*frameOverhead, c.e.sendQueueLimit)
	_ = c.wire.SetWriteDeadline(time.Now().Add(closeGrace))
	// The reply goes out in the same write as the close frame (wire.Write): on the urgent path
	// gws's write queue keeps running, and a queued frame written between the two would reach
	// the client after the reply that said it was the last.
	var frame []byte
	if reply != nil {
		frame = rfc6455.EncodeFrame(rfc6455.OpText, reply)
	}
	job := func() {
		if frame != nil {
			c.wire.beforeClose.Store(&frame)
		}
		_ = c.socket.WriteClose(code, nil)
	}
	if !urgent {
		c.socket.Async(job)
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return true // the socket is already gone; there is nothing left to send
	}
	c.e.wg.Add(1) // c's read loop still holds a count, so the group is not at zero
	go func() {
		defer c.e.wg.Done()
		job()
	}()
	return true
}

// end marks the read loop as finished; see mu.
func (c *conn) end() {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
}

// enqueue queues one broadcast frame of n payload bytes without blocking. A connection whose
// queue would go over the limit is closed 1013 instead, its queue dropped. A traced message
// (tr not nil) is held until the frame has been written to this socket.
func (c *conn) enqueue(bc *gws.Broadcaster, n int64, tr *tracing.Delivery) error {
	if c.closing() || c.wire.closed.Load() {
		c.dropped(telemetry.DropClosed, tracing.DropClosed, tr)
		return nil
	}
	if !c.out.admit(n+frameOverhead, c.e.sendQueueLimit) {
		if tr != nil {
			if c.slow() {
				tr.Dropped(tracing.DropSlowConsumer, 1)
			} else {
				tr.Dropped(tracing.DropClosed, 1)
			}
			return nil
		}
		c.slow()
		return nil
	}
	if err := bc.Broadcast(c.socket); err != nil {
		c.out.settle()
		return err
	}
	// gws's write queue runs one job at a time, in order, so a job queued now runs once the
	// frame above has been written (or has failed, which closes the socket). An untraced
	// message's job is c.settled, made once per connection; a traced one's also releases the
	// trace's hold.
	if tr == nil {
		c.socket.Async(c.settled)
		return nil
	}
	tr.Queued(1)
	tr.Hold(1)
	c.socket.Async(func() {
		c.settleDelivery()
		tr.Release()
	})
	return nil
}

// settleDelivery is c.settled: a delivery's frame has been written (or failed).
func (c *conn) settleDelivery() {
	c.out.settle()
	if !c.wire.closed.Load() {
		c.e.metrics.MessagesSent.Inc()
	}
}

// dropped counts a message not queued to c, in the metrics and in its trace if it has one.
func (c *conn) dropped(reason string, why tracing.Drop, tr *tracing.Delivery) {
	c.e.metrics.Dropped(reason, 1)
	if tr != nil {
		tr.Dropped(why, 1)
	}
}

// endCode is the close code c ended with, given the error gws's read loop ended on, and
// whether gws sent its close frame from the read loop without waiting for the peer's.
func (c *conn) endCode(err error) (code uint16, unanswered bool) {
	if code := c.code.Load(); code != 0 {
		return uint16(code), false // gws's read loop waited for the answer (wire.Close)
	}
	return classify(err)
}

// classify maps the error a gws read loop ended on to a close code. gws reports "no error
// stored" as an error with an empty message.
func classify(err error) (code uint16, unanswered bool) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		switch {
		case ce.Code == 0:
			return message.CloseNoStatus, false
		case !rfc6455.ValidCloseCode(ce.Code):
			// A code no peer may send (1005 on the wire, say): gws answered it 1002, and the
			// connection ended on that protocol error, as on the epoll engine.
			return message.CloseProtocolError, false
		}
		return ce.Code, false
	}
	// gws's own close decisions in its read loop: internal.StatusCode (1002, 1009, ...)
	// carries its code; invalid UTF-8 arrives unwrapped.
	var sc interface{ Uint16() uint16 }
	if errors.As(err, &sc) {
		return sc.Uint16(), true
	}
	if errors.Is(err, gws.ErrTextEncoding) {
		return message.CloseInvalidPayload, true
	}
	var ne net.Error
	if err == nil || err.Error() == "" || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne) {
		return message.CloseAbnormal, false
	}
	// What is left are gws's protocol failures reported as plain errors (an unknown opcode).
	return message.CloseProtocolError, true
}
