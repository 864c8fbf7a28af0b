// Package history keeps, per stream, the recent messages published with a position, so that a
// client that reconnects can be sent what it missed, or told exactly why it cannot be: its
// cursor comes from another epoch or a rewound history, or the messages after it expired, were
// trimmed, or are too many to replay.
//
// Two stores implement it with the same limits and answers: Redis (a Redis function library
// that appends each message to a Stream and publishes it in one atomic step, see
// docs/PROTOCOL.md "Publishing" and docs/OPERATIONS.md "History in Redis") and Memory (rings
// in the process, for the embedded backplane; a new process is a new epoch). Reads of one
// stream that arrive together are served by one read of the store.
//
// It knows nothing of WebSockets, connections or the v2 frames: it stores and judges
// positions. The resume logic that sends replays and sync frames is built on Reader.
package history
