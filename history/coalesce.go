package history

import (
	"context"
	"sync"
	"time"
)

// coalescer shares store reads between readers of the same stream: while a read of a stream
// is under way, every reader that arrives joins the next one, which starts when the current
// one ends and fetches what all of them need. So N readers arriving at once cost two reads,
// not N.
//
// A reader never takes the answer of a read that started before it asked: the resume logic
// subscribes before it reads, and a read that started earlier could miss a message published
// between that read and the subscription.
type coalescer struct {
	fetch   func(ctx context.Context, channel string, n need) (snapshot, error)
	size    int
	timeout time.Duration // bounds one store read, which no single reader's context owns

	mu      sync.Mutex
	streams map[string]*pending
}

// pending is one stream with a read under way; next gathers the readers of the read after it.
type pending struct {
	next *batch
}

// batch is one store read and the answer its readers share.
type batch struct {
	need    need
	readers int           // readers sharing it
	done    chan struct{} // closed when snap and err are set
	snap    snapshot
	err     error
}

func newCoalescer(size int, timeout time.Duration, fetch func(context.Context, string, need) (snapshot, error)) *coalescer {
	return &coalescer{fetch: fetch, size: size, timeout: timeout, streams: map[string]*pending{}}
}

// read returns a snapshot of channel fetched after the call began, covering what a reader at
// after with the given limit needs.
func (c *coalescer) read(ctx context.Context, channel string, after Position, limit int) (snapshot, error) {
	c.mu.Lock()
	p, running := c.streams[channel]
	var b *batch
	if running {
		if p.next == nil {
			p.next = &batch{done: make(chan struct{})}
		}
		b = p.next
	} else {
		p = &pending{}
		c.streams[channel] = p
		b = &batch{done: make(chan struct{})}
	}
	b.need = b.need.add(after, limit, c.size)
	b.readers++
	c.mu.Unlock()
	if !running {
		go c.run(channel, p, b)
	}
	select {
	case <-b.done:
		return b.snap, b.err
	case <-ctx.Done():
		return snapshot{}, ctx.Err()
	}
}

// run performs b, then each batch that gathered meanwhile, until none is waiting.
func (c *coalescer) run(channel string, p *pending, b *batch) {
	for b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		b.snap, b.err = c.fetch(ctx, channel, b.need)
		cancel()
		close(b.done)
		c.mu.Lock()
		b, p.next = p.next, nil
		if b == nil {
			delete(c.streams, channel)
		}
		c.mu.Unlock()
	}
}
