package session

import "time"

// FrameTimeout bounds how long a frame may take to arrive once its first byte has, plus
// FrameTime of the length its header announces: bytes that trickle in do not extend it. An
// incomplete frame is memory held for a client that may never finish it; ten seconds leave room
// for a slow mobile link to start a message, and FrameTime for it to carry a large one.
//
// Both engines then close the connection 1001 (going away), as for a connection that fell
// silent: to the client it is a connection that stopped making progress, and 1001 tells it to
// reconnect, which is right for a real slow link. 1002 would call it a protocol error and 1008
// a policy violation, which clients treat as a reason not to retry (a refused token).
const FrameTimeout = 10 * time.Second

// FrameMinRate is the slowest average rate, in bytes per second, at which a frame's announced
// length is allowed to arrive on top of FrameTimeout: 64 KiB/s, a 512 kbit/s mobile uplink. A
// fixed deadline would cut a 16 MiB message (MAX_MESSAGE_SIZE allows it) on any link slower
// than 13 Mbit/s, while one that grew with every byte would let a trickle hold the frame forever.
const FrameMinRate = 64 << 10

// FrameTime is how much longer than FrameTimeout a frame announcing length payload bytes has to
// arrive. It costs nothing to announce a long frame: the engines hold only what arrived.
func FrameTime(length int) time.Duration {
	return time.Duration(length) * time.Second / FrameMinRate
}
