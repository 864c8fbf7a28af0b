// Package gwsengine is the portable `gws` engine: one goroutine per connection on top of
// github.com/lxzan/gws, the baseline every benchmark of the epoll engine is compared against
// and the engine of choice on macOS and Windows. It carries connections that the HTTP layer
// has already authorised; it does no authentication, origin or limit checks of its own, and it
// is not the fast path on Linux (package eventloop is).
//
// Where gws forces a compromise:
//   - gws writes the 101 response inside Upgrader.UpgradeFromConn, before the engine can
//     register the connection. The wire (wire.go) holds that write, and every frame queued
//     after it, until the connection is in its shard, so a message published after the
//     client's open reaches it (DESIGN.md, "Subscribe before open").
//   - gws v1.8.9 converts a frame's 64-bit length to int; a length with the top bit set turns
//     negative, passes its size check and panics the read loop, taking the process down. The
//     wire follows the frame headers it reads and refuses any frame announcing more than
//     MaxMessageSize before gws sees the length: ErrorMessage MESSAGE_TOO_LARGE, close 1009.
//   - gws allocates a frame's whole payload as soon as it has read the header, then waits for
//     the bytes. The wire holds a large incomplete frame back from gws, in a buffer that grows
//     as its bytes arrive, and gives an incomplete frame session.FrameTimeout to complete
//     (close 1001 after it), as the epoll engine does (hold.go).
//   - gws fails an oversized inbound message with close 1009 inside its read loop, with no
//     hook in between; the engine's wire (wire.go) spots that close frame on its way out and
//     writes the MESSAGE_TOO_LARGE ErrorMessage in front of it.
//   - gws closes the TCP connection right after writing a close frame; the wire turns that into
//     a half-close and the engine waits up to closeGrace for the peer's close frame before it
//     releases the socket (RFC 6455 §7.1.1).
//   - gws's Broadcaster has no per-socket completion callback, so the send-queue accounting
//     queues a second job behind each broadcast frame (gws's write queue is FIFO) that settles
//     the frame's bytes. Every other frame for an open connection (echo, pong, heartbeat ping,
//     reply) goes through gws's write queue too, under the same limit (queue.go), rather than
//     being written on the read goroutine: a client that sends and never reads then passes
//     the limit and is closed 1013, as on the epoll engine. The read goroutine's own closes
//     (refused frame, frame deadline) queue behind what it queued, so an echo is not overtaken.
package gwsengine
