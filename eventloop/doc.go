//go:build linux

// Package eventloop is the `epoll` engine: a Linux reactor that carries the service's
// WebSocket connections on a few event loops instead of a goroutine each, so a pod can hold
// very many mostly idle connections in little memory and fan one message out to thousands
// quickly. It implements server.Engine; it does not authenticate, subscribe or count limits
// (the HTTP layer does that before Accept) and it does not run on other systems (use gwsengine).
//
// # Shape
//
// New starts Options.Shards loops (loop.go), each one goroutine with its own epoll instance
// (poller.go), connection table, registry.Shard, timing wheel (wheel.go), read buffer and write
// arena. A connection (conn.go) belongs to one loop for its whole life and only that goroutine
// touches it. Other goroutines hand work to a loop through a queue (queue.go): Accept's
// handoff, Deliver's batches, Drain and Close. The queue is taken whole and applied in order,
// and the loop's eventfd is written only for the first task since the loop last took the
// queue, so a burst costs one wake-up, not one per message. Adoptions may cost none (see
// Waiting). Deliveries are bounded (see Back-pressure).
//
// A loop's work is split by concept, one file each: taking a connection in (adopt.go),
// reading and answering it (inbound.go, parser.go), fanning deliveries out (deliver.go),
// writing (writev.go), the send queue limit and the slow consumer (sendlimit.go), deadlines
// (timers.go), and closing everything, by drain or shutdown (drain.go).
//
// # The front: upgrades read without net/http
//
// In the service, an upgrade request does not arrive through net/http at all. The Front
// (front.go) owns the listening socket: one goroutine with its own epoll set accepts
// connections (the listening socket carries TCP_NODELAY and the keep-alive settings, which
// Linux copies to every accepted socket), reads each one's request head at once or when it
// arrives (a one-shot registration, so a connection that moves on needs no EPOLL_CTL_DEL),
// and closes heads not complete within net/http's ReadHeaderTimeout of the accept. A plain
// WebSocket upgrade at /ws (request.go: parseHead) becomes the *http.Request net/http would
// have built, and the server's admission runs on a goroutine of its own with a
// frontWriter as its ResponseWriter: Accept and Reject take the descriptor from it instead
// of hijacking (Accept still writes the 101 through the original and gives the shard a
// duplicate, so "Descriptor ownership" below holds unchanged), and a refusal it wrote is sent
// as net/http would send it before net/http takes the connection over. Everything else —
// other paths and methods, a head net/http would answer 400 or 431, a body, a folded line —
// goes to net/http with the bytes read so far replayed (Front is the net.Listener net/http
// serves), so its answers stay its own. A connection net/http serves can still upgrade: Accept
// then hijacks it as described next. What this saves per handshake, measured: net/http's
// goroutine, buffers and connection state, the netpoller registration and its removal, and
// five socket options (bench/RESULTS.md, "Handshake sweep").
//
// # Leaving net/http: the descriptor handoff
//
// An upgrade that arrives through net/http (with no Front, or behind another request on the
// same connection) is hijacked. Accept validates the handshake itself
// (handshake.go), hijacks the connection, keeps whatever the client sent behind its handshake
// that net/http had already buffered, and reaches the socket with
// SyscallConn().Control, where it duplicates the descriptor (fcntl F_DUPFD_CLOEXEC, as gnet's
// eventloop.enroll does with dup). It then closes the net.Conn. That is safe because:
//
//   - Hijack has already stopped net/http's background read, so no goroutine is inside a Read
//     on the net.Conn; Go closes its descriptor only when no operation holds it.
//   - Closing the net.Conn makes Go's netpoller remove the original descriptor from its own
//     epoll set (EPOLL_CTL_DEL while the descriptor is still open) before closing it, so Go
//     never again reports readiness for this socket or touches it. Had the registration been
//     left behind, the kernel would have kept it as long as our duplicate kept the open file
//     description alive.
//   - close(2) of one descriptor never shuts the socket down while another refers to it (and
//     no SO_LINGER is set), so the TCP connection is untouched; O_NONBLOCK (a flag of the open
//     file description, set by Go's accept4) and TCP_NODELAY are shared and stay.
//   - The duplicate is close-on-exec, so a child process cannot keep a client's socket open.
//
// The duplicate then goes to the least loaded running shard: Accept queues its adoption
// (without waking the shard), writes the 101 itself through the still-open original
// descriptor, then queues taskSent and wakes the shard once. Because the shard's queue is
// FIFO, the registration is applied before any delivery of a message published after the
// client saw the 101, so such a message is never missed; and the shard writes nothing for the
// connection until Accept reports the 101 written, so nothing can overtake it. Keeping the
// 101 off the shard's thread removes a cross-thread wake-up from every handshake's critical
// path. The shard feeds the buffered early bytes to the parser as if they had just been read.
// Accept returns without waiting for the shard (waiting was one more cross-thread hand-off
// per handshake); from then on the engine owns the connection and reports its end through
// Hooks.Closed exactly once, even if the shard stopped before taking it. Nothing of it stays
// behind in the request's goroutine.
// TLS must be terminated in front of this engine (a *tls.Conn has no descriptor to hand over).
//
// # Waiting
//
// A loop never blocks its thread in epoll_wait. Its epoll descriptor is itself registered in
// Go's netpoller (an epoll set is readable while it has ready events), the loop reads it with a
// zero timeout and, finding nothing, parks like any goroutine waiting for a socket, with the
// wheel's next tick as the read deadline. A thread blocked in a system call would keep its
// OS thread while the runtime hands its P to another, and on return it must find a P again:
// measured, that doubled the server's context switches per handshake against gws and put the
// epoll engine's handshake rate below it. Parking is sound although the netpoller watches the
// set edge-triggered: the loop parks only after a look that found nothing, and any event after
// that look makes the set readable anew.
//
// During a burst of handshakes a shard polls: after adopting a connection it looks at its
// queue again within a millisecond whether woken or not, so Accept queues further adoptions
// without writing the eventfd, and a shard wakes about once a millisecond instead of once per
// handshake. The first handshake after a quiet spell wakes it as soon as its 101 is out. An
// adoption queued before its 101 is written is not an owed wake-up, so a delivery queued
// meanwhile by another goroutine wakes the shard itself rather than waiting for the HTTP
// goroutine to be scheduled again. A delivery always wakes it, and the queue is applied in
// order, so a message for a connection accepted a moment earlier is never delayed or missed;
// what may wait up to the millisecond is the reading of the new connection's first frames.
//
// # Descriptor ownership
//
// Every descriptor the engine holds has exactly one owner at a time, only the owner writes or
// closes it, and it is closed exactly once. A close frees the number at once, and a
// concurrent accept, dup or Redis dial may get it in the next instant: a write or a second
// close after that would hit someone else's socket (one user's bytes in another's stream).
//
//   - A client socket: Accept (or Reject) owns the duplicate from F_DUPFD_CLOEXEC until it
//     queues the adoption; from that moment the shard owns it, and the HTTP goroutine never
//     touches that number again, not even on an error path (Accept writes the 101 through the
//     original descriptor, which it owns and closes). If no shard takes the adoption (every
//     shard stopped), the caller still owns it and closes it (Reject first sends what fits
//     of its response). A shard that cannot take an adoption it was given (it is stopping,
//     or EPOLL_CTL_ADD fails) closes it itself: refuse, which for a rejection also sends
//     what fits of the response.
//   - A registered connection is closed by finish only, once (stateClosed guards it), after
//     EPOLL_CTL_DEL: the original descriptor may still be open in Accept, and epoll keeps a
//     registration until the socket's last descriptor is closed, so without the DEL the
//     dead socket would go on being reported under a slot and number a new connection may
//     get. Only the loop goroutine ever writes a connection's descriptor.
//   - The eventfd is written by any goroutine that queued a task and claimed the wake-up
//     (under the loop's lock, counted in loop.wakers while the write is pending). The loop
//     owns it, but when it stops it closes it only if no claimed write is pending; otherwise
//     the last pending writer closes it after writing. So it is never written after close,
//     and closed exactly once.
//   - The epoll descriptor is the loop goroutine's alone, closed by its shutdown.
//
// A connection is held from its adoption until Accept's taskSent (flagHeld): the shard may
// already queue frames for it and read its input, but writes nothing until the 101 is out. A
// stopping shard goes on until it holds none (Accept queues taskSent within the 101's write
// timeout), so a connection closed by Close still gets its close frame after its 101.
// Every accepted connection ends in exactly one Hooks.Closed: release (guarded by
// flagRegistered) for a registered one, refuse for one no shard could take.
//
// # Failed shards
//
// If a shard's epoll wait fails, its loop closes its connections (1001) and stops. It is then
// skipped by placement (with no connections it would otherwise look the least loaded and
// get every new upgrade), counted in eventloop_shards_failed, logged, and reported by
// Engine.Ready, which makes /readyz answer 503 so the pod gets replaced. With no shard left
// an upgrade gets a plain 503 before anything is hijacked.
//
// # Back-pressure
//
// A shard's queue holds at most shardQueueBytes of deliveries not yet applied (payload plus a
// fixed overhead per delivery; queue.go). Deliver waits while a shard is at the bound, never
// on a socket and never holding the shard's lock, which blocks the backplane's reader: the
// relay stops reading Redis, and Redis's own output buffer limit for Pub/Sub clients takes
// effect rather than this process growing without limit. A stopped or failed shard never makes
// Deliver wait: what it will not apply is dropped and counted
// (websocket_messages_dropped_total{reason="shard_stopped"}). eventloop_shard_queue_bytes
// exports each shard's depth.
//
// # Level-triggered
//
// Connections are registered level-triggered. A ready connection gets one read into the
// shard's 64 KiB buffer per wake-up; if more is waiting, the next epoll_wait reports it again
// after every other ready connection had its turn, so one fast sender cannot starve a shard and
// no "still readable" list is needed (edge-triggered would oblige reading to EAGAIN). EPOLLOUT
// is asked for only while a connection has a write backlog and dropped once it is written, so
// idle sockets never wake the loop; for a notification service client input is small and rare,
// and the price of level-triggering (a repeat report for a connection with more than a buffer
// waiting) is rarely paid.
//
// # Reading
//
// The parser (parser.go) takes bytes as they come. An idle connection holds no read buffer;
// only an incomplete frame's bytes are kept, in a buffer that grows as they arrive (a header
// is a claim: its length is checked against MaxMessageSize, never allocated), released when
// the frame is complete, plus the payload of a fragmented message while it is open (its
// UTF-8 is checked as fragments arrive, so bad text fails at once with 1007). An incomplete
// frame must be complete within session.FrameTimeout of its first byte, however its bytes
// trickle in; the wheel closes the connection 1001 otherwise.
//
// # Writing
//
// A delivery is encoded once per shard into an immutable frame; each target gets a reference
// appended to the loop's write arena and is marked dirty. After the whole batch every dirty
// connection is written once with writev (writev.go). A partial write moves the rest to the
// connection's backlog and waits for EPOLLOUT. Every frame queued for an open connection goes
// through the same check (send, in sendlimit.go): deliveries, echoes, pongs, heartbeat pings,
// replies. What counts is each frame's bytes plus a small allowance for the loop's bookkeeping,
// so a flood of empty pongs is bounded like a few large frames, and the frame being written
// does not count: SendQueueLimit bounds what waits behind it, so a message larger than the limit
// still reaches a reader. A target that passes the limit is first written at once
// (non-blocking), so a burst bigger than the limit does not condemn a reader that keeps up; if
// its socket still will not take enough, it loses its queue and is closed 1013 (SLOW_CONSUMER)
// without delaying anyone else. The last frames of a close (an error reply, the close frame)
// go out even past the limit, but on a full queue the queue is dropped first.
//
// # Time
//
// Heartbeat pings, the silence timeout, token expiry, an incomplete frame's deadline and the
// closing handshake's one-second deadline all live in one timing wheel per shard (timers.go);
// each connection sits in the slot of its earliest deadline and the loop sleeps until the next
// occupied tick. A closing connection has only the closing deadline, kept as its wheel entry.
package eventloop
