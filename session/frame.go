package session

import "time"

// FrameTimeout bounds how long a frame may take to arrive once its first byte has: bytes that
// trickle in do not extend it. An incomplete frame is memory held for a client that may never
// finish it; ten seconds leave room for a slow mobile link to send a large message.
//
// Both engines then close the connection 1001 (going away), as for a connection that fell
// silent: to the client it is a connection that stopped making progress, and 1001 tells it to
// reconnect, which is right for a real slow link. 1002 would call it a protocol error and 1008
// a policy violation, which clients treat as a reason not to retry (a refused token).
const FrameTimeout = 10 * time.Second
