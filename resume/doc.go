// Package resume is the engine-neutral half of protocol notifications.v2 (docs/PROTOCOL.md):
// the v2 frames, the resume frame a client opens with, and what one connection does from its
// open until it is live: hold its deliveries, read each of its streams' history after the
// client's cursors (on a goroutine of the Service, never the engine's), then hand the engine,
// chunk by chunk as its socket drains, the replay, one sync per stream, and the held messages
// with everything already replayed dropped.
//
// An engine owns one State per v2 connection and calls it only where it serialises that
// connection's work (the shard's loop goroutine on the epoll engine, a per-connection lock on
// the gws engine). The Service bounds the resumes in flight node-wide, so a storm of
// reconnects is paced rather than held in memory.
package resume
