package server

import (
	"sync"
	"time"
)

// ipRate is a token bucket per client IP for HANDSHAKE_RATE_PER_IP: `rate` upgrades a second
// with a burst of the same size. Buckets that have refilled completely carry no information
// and are swept, so the map stays as small as the set of currently busy addresses.
type ipRate struct {
	rate  float64
	burst float64

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxTrackedIPs bounds the map under an address-spraying attack; past it, unknown addresses
// are refused until the next sweep frees room.
const maxTrackedIPs = 1 << 20

func newIPRate(rate float64) *ipRate {
	burst := rate
	if burst < 1 {
		burst = 1
	}
	return &ipRate{rate: rate, burst: burst, buckets: map[string]*bucket{}}
}

func (l *ipRate) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > 10*time.Second {
		l.sweep(now)
	}
	b, ok := l.buckets[ip]
	if !ok {
		if len(l.buckets) >= maxTrackedIPs {
			return false
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * l.rate
	if b.tokens > l.burst {
		b.tokens = l.burst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *ipRate) sweep(now time.Time) {
	l.lastSweep = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, ip)
		}
	}
}
