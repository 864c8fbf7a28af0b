package backplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/telemetry"
)

// EmbeddedOptions configure the embedded backplane.
type EmbeddedOptions struct {
	// Linger keeps a channel held this long after its last reference is dropped (default 2s;
	// negative: release at once), as the Redis backplane does.
	Linger time.Duration
	// QueueSize bounds the messages published but not yet delivered (default 4096); Publish
	// waits while it is full.
	QueueSize int
	History   history.Limits     // HISTORY_SIZE and HISTORY_TTL of the in-memory history
	Metrics   *telemetry.Metrics // nil: metrics are kept but not exported
	Logger    *slog.Logger       // nil: no logs
}

// Embedded is the in-process backplane of a single node (no REDIS_URL): Publish hands the
// message to a dispatcher goroutine, which delivers it in batches, in publish order, when a
// subscription holds its channel. A channel is live as soon as Subscribe returns.
type Embedded struct {
	opts  EmbeddedOptions
	sink  Sink
	m     *telemetry.Metrics
	log   *slog.Logger
	queue chan Message
	hist  *history.Memory
	// seq is held across appending a sequenced message to the history and queueing it, so
	// messages are delivered in the order of their positions.
	seq sync.Mutex

	mu      sync.Mutex
	refs    *refcount
	stopped []Subscription // channels released since the last batch, for a Watcher
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewEmbedded prepares an embedded backplane delivering to sink; Start runs it.
func NewEmbedded(opts EmbeddedOptions, sink Sink) (*Embedded, error) {
	if opts.Linger == 0 {
		opts.Linger = 2 * time.Second
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	hist, err := history.NewMemory(opts.History, nil)
	if err != nil {
		return nil, fmt.Errorf("embedded backplane: %w", err)
	}
	return &Embedded{
		opts:  opts,
		sink:  sink,
		m:     opts.Metrics,
		log:   opts.Logger,
		queue: make(chan Message, opts.QueueSize),
		hist:  hist,
		refs:  newRefcount(opts.Linger),
	}, nil
}

// Start runs the dispatcher until Close (or until ctx ends).
func (e *Embedded) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.started {
		return errors.New("embedded backplane: already started")
	}
	e.started = true
	ctx, e.cancel = context.WithCancel(ctx)
	e.m.BackplaneConnected.Set(1)
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		e.dispatch(ctx)
	}()
	go func() {
		defer e.wg.Done()
		e.expire(ctx)
	}()
	return nil
}

// Subscribe takes a reference on each channel; they are live at once.
func (e *Embedded) Subscribe(ctx context.Context, chans []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	for _, ch := range chans {
		e.refs.acquire(ch)
	}
	e.m.BackplaneSubscriptions.Set(float64(e.refs.active))
	return nil
}

// Unsubscribe drops a reference on each channel; one left without references stops receiving
// after the linger period unless referenced again meanwhile.
func (e *Embedded) Unsubscribe(chans []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	for _, ch := range chans {
		if e.refs.release(ch, now) {
			e.stoppedLocked(ch)
		}
	}
	e.m.BackplaneSubscriptions.Set(float64(e.refs.active))
}

// Publish queues a copy of payload for channel; it waits while the queue is full.
func (e *Embedded) Publish(ctx context.Context, channel string, payload []byte) error {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return e.enqueue(ctx, Message{Channel: channel, Payload: append([]byte(nil), payload...)})
}

func (e *Embedded) enqueue(ctx context.Context, m Message) error {
	select {
	case e.queue <- m:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish to %s: %w", m.Channel, ctx.Err())
	}
}

// PublishSequenced appends a copy of payload to channel's in-memory history and queues it with
// its position; it waits while the queue is full. When ctx ends first the message is in the
// history but not delivered live, as a Redis publish that timed out may be.
func (e *Embedded) PublishSequenced(ctx context.Context, channel string, payload []byte, traceparent string) (history.Position, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return history.Position{}, ErrClosed
	}
	e.seq.Lock()
	defer e.seq.Unlock()
	en := e.hist.Append(channel, append([]byte(nil), payload...), traceparent)
	m := Message{Channel: channel, Payload: en.Payload, Position: en.Position, Prev: en.Prev}
	if traceparent != "" {
		m.Traceparent = []byte(traceparent)
	}
	if err := e.enqueue(ctx, m); err != nil {
		return history.Position{}, err
	}
	return en.Position, nil
}

// History reads the streams' in-memory history.
func (e *Embedded) History() history.Reader { return e.hist }

// Ready returns nil once started and until closed.
func (e *Embedded) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return ErrClosed
	case !e.started:
		return errors.New("embedded backplane not started")
	}
	return nil
}

// Close forgets every subscription, drops undelivered messages and stops the goroutines.
func (e *Embedded) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.refs.reset()
	if e.cancel != nil {
		e.cancel()
	}
	e.mu.Unlock()
	e.wg.Wait()
	if n := len(e.queue); n > 0 {
		e.log.Info("backplane: embedded backplane closed with messages undelivered", "dropped", n)
	}
	e.m.BackplaneSubscriptions.Set(0)
	e.m.BackplaneConnected.Set(0)
	return nil
}

// dispatch takes whatever has been published (up to maxBatch messages), keeps the messages
// of held channels and delivers them as one batch.
func (e *Embedded) dispatch(ctx context.Context) {
	for {
		var first Message
		select {
		case <-ctx.Done():
			return
		case first = <-e.queue:
		}
		batch := make([]Message, 1, min(len(e.queue)+1, maxBatch))
		batch[0] = first
	drain:
		for len(batch) < maxBatch {
			select {
			case m := <-e.queue:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		e.mu.Lock()
		kept := batch[:0]
		for _, m := range batch {
			if e.refs.held(m.Channel) {
				kept = append(kept, m)
			}
		}
		stopped := e.stopped
		e.stopped = nil
		e.mu.Unlock()
		if w, ok := e.sink.(Watcher); ok && len(stopped) > 0 {
			// Before the batch: a message in it of a channel held again is a new start.
			w.Subscriptions(stopped)
		}
		clear(batch[len(kept):])
		if len(kept) > 0 {
			e.m.BackplaneReceived.Add(len(kept))
			e.sink.Deliver(kept)
		}
	}
}

// stoppedLocked records that ch is no longer held, for a Watcher (only that: in one process no
// message is lost, so nothing ever resumes).
func (e *Embedded) stoppedLocked(ch string) {
	if _, ok := e.sink.(Watcher); ok {
		e.stopped = append(e.stopped, Subscription{Channel: ch, Change: Stopped})
	}
}

// expire releases lingering channels whose linger has passed.
func (e *Embedded) expire(ctx context.Context) {
	t := time.NewTicker(sweepInterval(e.opts.Linger))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.mu.Lock()
			e.refs.expire(now, e.stoppedLocked)
			e.mu.Unlock()
		}
	}
}
