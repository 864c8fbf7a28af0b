package session

import (
	"time"

	"github.com/huleedu/websocket-service/message"
)

// Rate is a limit on events per connection: a steady rate with a burst. The zero Rate is no
// limit. It is a generic cell rate algorithm (GCRA), the token bucket kept as one number per
// connection: the time at which the connection's bucket would be full again.
type Rate struct {
	interval int64 // nanoseconds between events at the steady rate; 0: no limit
	window   int64 // interval × burst: how far ahead of now the bucket may be spent
}

// PerSecond is a rate of n events per second with bursts of burst events; n <= 0 is no limit.
func PerSecond(n float64, burst int) Rate {
	if n <= 0 {
		return Rate{}
	}
	interval := max(int64(float64(time.Second)/n), 1)
	return Rate{interval: interval, window: interval * int64(max(burst, 1))}
}

// InboundBurst is how many frames a connection may send at once beyond its steady rate, as a
// multiple of the rate (README, "Configuration": bursts of twice the rate).
const InboundBurst = 2

// FrameRate is the limit INBOUND_RATE_PER_CONNECTION sets: perSecond frames a second, bursts
// of twice that; 0 is no limit.
func FrameRate(perSecond int) Rate { return PerSecond(float64(perSecond), InboundBurst*perSecond) }

// refreshRate bounds token refreshes, whatever the frame rate allows. A refresh is verified
// where the connection's other work runs (a shard's loop goroutine on the epoll engine), and
// an RS256 or ES256 verification costs up to ~150 µs: the ~200 refreshes that fit in one
// 64 KiB read would stall every connection of the shard for tens of milliseconds. A client
// refreshes once per token lifetime (minutes); one a second with a burst of two leaves room
// for a retry and costs a shard at most one verification per connection per second.
var refreshRate = PerSecond(1, 2)

// Bucket is one connection's use of a Rate. It is not safe for concurrent use: the goroutine
// that reads the connection owns it.
type Bucket struct {
	full int64 // when the bucket is full again, on the engine's clock; 0: full
}

// Take spends n events at now (nanoseconds on any monotonic clock the engine keeps, the
// same for every call on the bucket) and reports whether they were within r. Events over the
// limit are not spent: a connection refused is closed anyway.
func (b *Bucket) Take(r Rate, now int64, n int) bool {
	if r.interval == 0 {
		return true
	}
	next := max(b.full, now) + r.interval*int64(n)
	if next-now > r.window {
		return false
	}
	b.full = next
	return true
}

// Inbound is what a connection has spent of its inbound limits: frames, and token refreshes.
// Like a Bucket it belongs to the goroutine that reads the connection.
type Inbound struct {
	Frames    Bucket
	refreshes Bucket
}

// RateLimited is the action for a connection over an inbound limit.
func RateLimited() Action {
	return Action{Reply: message.ErrorJSON(message.CodeRateLimited), Close: message.ClosePolicyViolation}
}
