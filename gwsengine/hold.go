package gwsengine

import (
	"errors"
	"os"
	"time"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// holdOver is the largest frame body (mask key and payload) the wire lets gws see before the
// frame is complete. gws allocates a frame's whole payload as soon as it has read the header
// and then waits for the bytes, so a client announcing a megabyte and sending nothing more
// would cost the server that megabyte. A larger frame is held back by the wire, in a buffer
// that grows as its bytes arrive, and handed to gws once complete; a smaller one costs gws
// at most this much, like its own read buffer.
const holdOver = readBufferSize

// errFrameTimeout ends gws's read loop for a frame not completed in time; the close frame is
// written by then (see frameTimedOut).
var errFrameTimeout = errors.New("gwsengine: frame not completed within its deadline")

// inbound is the wire's read-side state for incomplete frames; only gws's read goroutine
// touches it.
type inbound struct {
	pend       []byte    // an incomplete frame held back from gws: its bytes so far
	ready      []byte    // held bytes gws may have: a frame now complete, or what follows a split
	drainFirst bool      // ready starts with a frame that ends the connection: drain first
	frameBy    time.Time // when the incomplete frame at the end of the stream must be complete
	frameStart time.Time // when its first byte came
	frameSized bool      // frameBy includes the time its announced length allows
}

// drain waits, at most closeGrace, until gws has written every frame queued for the
// connection so far. The replies the read goroutine queues (echoes, pongs) are written by
// gws's write queue, but gws writes the close frame that answers a peer's close, or fails the
// connection for a bad frame, on the read goroutine: without this wait that close frame would
// overtake the replies to the frames before it, and gws writes nothing after a close frame.
// It costs a wait only when a connection ends.
func (w *wire) drain() {
	if w.socket == nil {
		return
	}
	done := make(chan struct{})
	w.socket.Async(func() { close(done) })
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// serveReady hands gws what it can take of a completed held frame.
func (w *wire) serveReady(p []byte) int {
	n := copy(p, w.ready)
	w.ready = w.ready[n:]
	if len(w.ready) == 0 {
		w.ready = nil
	}
	return n
}

// keep decides what of the n bytes just read into p (already scanned) gws gets now, and holds
// the rest. It returns how many bytes of p are gws's; 0 means read on.
func (w *wire) keep(p []byte, n int) int {
	f := &w.frames
	if w.pend != nil {
		w.pend = append(w.pend, p[:n]...) // grows with the bytes, never with the header's claim
		if f.state == scanFirst || (f.state == scanSkip && f.body <= holdOver) {
			// Complete, or its header turned out to announce a small frame: gws may have it.
			w.ready, w.pend = w.pend, nil
			return w.serveReady(p)
		}
		return 0
	}
	if f.state == scanFirst || f.began < 0 || (f.state == scanSkip && f.body <= holdOver) {
		// Whole frames, the rest of a small frame gws is already reading, or a small
		// incomplete frame.
		return n
	}
	// A frame began in this read and is incomplete: its header is, or it is large.
	w.pend = append(make([]byte, 0, n-f.began), p[f.began:n]...)
	return f.began
}

// missing is how many more bytes the frame being scanned needs: its body's rest, or, while its
// header is incomplete, at least the next header bytes.
func (f *frameScan) missing() uint64 {
	switch f.state {
	case scanSkip:
		return f.skip
	case scanLength:
		return uint64(f.ext)
	}
	return 1
}

// track starts the deadline of a frame that began in the last read and is incomplete, adds
// the time its announced length allows once its header is in, and ends it once the stream is
// at a frame boundary again; bytes that trickle in meanwhile do not move it
// (session.FrameTimeout, session.FrameTime).
func (w *wire) track() {
	f := &w.frames
	mid := f.state != scanFirst
	moved := false
	switch {
	case mid && f.began >= 0:
		w.frameStart, w.frameSized = time.Now(), false
		w.frameBy, moved = w.frameStart.Add(session.FrameTimeout), true
	case !mid && !w.frameBy.IsZero():
		w.frameBy = time.Time{}
		w.setReadDeadline(time.Time{})
		return
	}
	if mid && f.state == scanSkip && !w.frameSized {
		w.frameSized = true
		w.frameBy, moved = w.frameStart.Add(session.FrameTimeout+session.FrameTime(int(f.body))), true
	}
	if moved {
		w.setReadDeadline(w.frameBy)
	}
}

// setReadDeadline sets the frame deadline unless the wire is closing (Close set its own
// deadline) or broken (open woke the reader); if one of those came meanwhile, its deadline
// is put back.
func (w *wire) setReadDeadline(t time.Time) {
	if w.closed.Load() || w.state.Load() == wireBroken {
		return
	}
	_ = w.Conn.SetReadDeadline(t)
	switch {
	case w.closed.Load():
		_ = w.Conn.SetReadDeadline(time.Now().Add(closeGrace))
	case w.state.Load() == wireBroken:
		_ = w.Conn.SetReadDeadline(time.Now())
	}
}

// readError turns the frame deadline's expiry into its close; other errors pass.
func (w *wire) readError(err error) error {
	if w.frameBy.IsZero() || !errors.Is(err, os.ErrDeadlineExceeded) || time.Now().Before(w.frameBy) ||
		w.closed.Load() || w.socket == nil {
		return err
	}
	w.frameBy, w.pend = time.Time{}, nil
	if w.metrics != nil {
		w.metrics.Dropped(telemetry.DropIncompleteFrame, 1)
	}
	// As refuse does for 1009: WriteClose stores the code as the read loop's end, so OnClose
	// sees 1001 and gws adds no second close frame.
	w.closeBehindQueue(message.CloseGoingAway)
	return errFrameTimeout
}
