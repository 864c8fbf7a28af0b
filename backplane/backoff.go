package backplane

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff spaces reconnection attempts: exponential from min to max, each wait drawn from
// [d/2, d) so that nodes which lost Redis together do not return to it in step.
type backoff struct {
	min, max, next time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min}
}

func (b *backoff) reset() { b.next = b.min }

// sleep waits for the next interval; false when ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
