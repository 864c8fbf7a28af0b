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

// ErrClosed is returned by a backplane used after Close.
var ErrClosed = errors.New("backplane closed")

// RedisOptions configure the Redis backplane.
type RedisOptions struct {
	URL         string // redis:// or rediss:// URL; with Cluster a comma list of them
	Cluster     bool   // sharded Pub/Sub (SSUBSCRIBE/SPUBLISH) on a Redis Cluster
	PubSubConns int    // Pub/Sub connections (default 2); on a cluster, one per master instead
	// Linger keeps a channel subscribed this long after its last reference is dropped
	// (default 2s; negative: unsubscribe at once).
	Linger  time.Duration
	History history.Limits     // HISTORY_SIZE and HISTORY_TTL, written into the function library
	Metrics *telemetry.Metrics // nil: metrics are kept but not exported
	Logger  *slog.Logger       // nil: no logs
}

// publishPoolSize caps the command connections (PUBLISH, PING): with the two default Pub/Sub
// connections a node uses at most four connections to Redis, whatever its number of users.
const publishPoolSize = 2

// Redis is the backplane over Redis Pub/Sub. Each channel maps to one of a fixed set of
// Pub/Sub connections (relays) by a hash of its name, or on a cluster to the connection to
// the master serving its slot, so its messages arrive in publish order.
//
// backplane_subscriptions_active counts channels with at least one reference (lingering
// channels, still subscribed on Redis, are not counted). backplane_reconnects_total counts
// Pub/Sub connections re-established after a loss.
type Redis struct {
	opts RedisOptions
	ep   *endpoint
	sink Sink
	log  *slog.Logger
	m    *telemetry.Metrics
	pub  *Publisher

	refresh chan struct{} // cluster: asks the topology loop to reload; capacity 1
	clock   outageClock

	reinstall chan struct{} // asks installLibrary to load the function library again; capacity 1

	mu sync.Mutex
	// The references on each channel live in the state of the relay it is routed to
	// (relaychans.go); waiting holds them while there is no relay (a cluster whose topology
	// is not loaded yet), and active counts the relays' channels with references.
	waiting    *refcount
	active     int
	relays     []*relay
	rebuilt    chan struct{} // closed and replaced when channels are rerouted, and at Close
	topo       *topology     // cluster only; nil until loaded
	relayCount int           // relays ever made, for their log ids
	topoErr    error
	pingErr    error
	started    bool
	closed     bool
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// NewRedis prepares a Redis backplane delivering to sink. Nothing connects before Start.
func NewRedis(opts RedisOptions, sink Sink) (*Redis, error) {
	ep, err := parseEndpoint(opts.URL, opts.Cluster)
	if err != nil {
		return nil, fmt.Errorf("redis backplane: %w", err)
	}
	if opts.PubSubConns <= 0 {
		opts.PubSubConns = 2
	}
	if opts.Linger == 0 {
		opts.Linger = 2 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	pub, err := newPublisher(ep, publishPoolSize, opts.History)
	if err != nil {
		return nil, fmt.Errorf("redis backplane: %w", err)
	}
	r := &Redis{
		opts:    opts,
		ep:      ep,
		sink:    sink,
		log:     opts.Logger,
		m:       opts.Metrics,
		pub:     pub,
		refresh: make(chan struct{}, 1),
		waiting: newRefcount(-1), // nothing is subscribed for them: no linger
		rebuilt: make(chan struct{}),
		topoErr: errors.New("cluster topology not loaded yet"),
		pingErr: errors.New("not pinged yet"),
	}
	r.reinstall = make(chan struct{}, 1)
	if !opts.Cluster {
		for i := 0; i < opts.PubSubConns; i++ {
			r.relays = append(r.relays, r.newRelayLocked(ep.addrs[0]))
		}
	}
	return r, nil
}

// Start begins connecting and returns at once. The backplane runs until Close (or until ctx
// ends). A Redis that cannot be reached is logged and retried with backoff; Ready says why.
func (r *Redis) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return errors.New("redis backplane: already started")
	}
	r.started = true
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.m.BackplaneConnected.Set(0)
	if r.opts.Cluster {
		r.goLocked(r.watchTopology)
	} else {
		r.startRelaysLocked()
	}
	r.goLocked(r.maintain)
	r.goLocked(r.installLibrary)
	return nil
}

func (r *Redis) goLocked(f func(ctx context.Context)) {
	ctx := r.ctx
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f(ctx)
	}()
}

// startRelaysLocked runs the relays of a single Redis; each subscribes the channels it holds
// once connected.
func (r *Redis) startRelaysLocked() {
	for _, rl := range r.relays {
		r.startRelayLocked(rl)
	}
}

// startRelayLocked runs rl until Close, or until rl.stop (its master left the cluster).
func (r *Redis) startRelayLocked(rl *relay) {
	ctx, cancel := context.WithCancel(r.ctx)
	rl.stop = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		rl.run(ctx)
	}()
}

// newRelayLocked makes a relay to addr, numbered for the logs.
func (r *Redis) newRelayLocked(addr string) *relay {
	rl := newRelay(r.relayCount, addr, r.opts.Cluster, r.opts.Linger, r.ep.dial, r.sink, r, r.log)
	r.relayCount++
	return rl
}

// routeLocked picks the relay of a channel; there is at least one relay.
func (r *Redis) routeLocked(ch string) int {
	if r.topo != nil {
		return r.topo.route(ch)
	}
	// FNV-1a: stable, cheap, and spreads similar names ("ws:1", "ws:2") evenly.
	h := uint32(2166136261)
	for i := 0; i < len(ch); i++ {
		h ^= uint32(ch[i])
		h *= 16777619
	}
	return int(h % uint32(len(r.relays)))
}

// groupLocked splits channels by relay.
func (r *Redis) groupLocked(chans []string) [][]string {
	if len(r.relays) == 0 {
		return nil
	}
	groups := make([][]string, len(r.relays))
	for _, ch := range chans {
		i := r.routeLocked(ch)
		groups[i] = append(groups[i], ch)
	}
	return groups
}

// Subscribe takes a reference on each channel and returns nil once all are live on Redis:
// subscribed and confirmed, so that a message published afterwards is delivered. It never
// reports success before that: while Redis is unreachable it waits for the reconnection to
// confirm them, and when a cluster topology rebuild moves channels to new connections it
// follows them there. It fails when ctx ends first. The references are taken even when it
// fails: the caller drops them with Unsubscribe in either case (until then the channels are
// subscribed as soon as Redis allows).
func (r *Redis) Subscribe(ctx context.Context, chans []string) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if len(r.relays) == 0 {
		for _, ch := range chans {
			r.waiting.acquire(ch)
		}
	}
	for i, g := range r.groupLocked(chans) {
		if len(g) > 0 {
			r.active += r.relays[i].acquire(g)
		}
	}
	r.setSubscriptionsLocked()
	r.mu.Unlock()
	for {
		err := r.awaitLive(ctx, chans)
		if !errors.Is(err, errRetired) {
			if err != nil {
				return fmt.Errorf("subscribe %d channels: %w", len(chans), err)
			}
			return nil
		}
		// A cluster topology rebuild rerouted channels: each is now wanted by the relay of
		// the master serving it, which must confirm it in turn.
	}
}

// awaitLive waits until every channel is live on the relay that serves it now, or returns
// errRetired when channels are rerouted first.
func (r *Redis) awaitLive(ctx context.Context, chans []string) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if len(r.relays) == 0 {
		// A cluster whose topology is not loaded yet: nothing can be confirmed before it is.
		rebuilt := r.rebuilt
		r.mu.Unlock()
		select {
		case <-rebuilt:
			return errRetired
		case <-ctx.Done():
			return fmt.Errorf("wait for the cluster topology: %w", ctx.Err())
		}
	}
	relays, waits, moved := r.relays, r.groupLocked(chans), r.rebuilt
	r.mu.Unlock()
	for i, g := range waits {
		if len(g) == 0 {
			continue
		}
		if err := relays[i].awaitLive(ctx, g, moved); err != nil {
			return err
		}
	}
	return nil
}

// Unsubscribe drops a reference on each channel; one left without references is unsubscribed
// after the linger period unless referenced again meanwhile.
func (r *Redis) Unsubscribe(chans []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return // Close forgot every reference
	}
	now := time.Now()
	if len(r.relays) == 0 {
		for _, ch := range chans {
			r.waiting.release(ch, now)
		}
	}
	for i, g := range r.groupLocked(chans) {
		if len(g) > 0 {
			r.active -= r.relays[i].release(g, now)
		}
	}
	r.setSubscriptionsLocked()
}

// setSubscriptionsLocked exports the channels with at least one reference.
func (r *Redis) setSubscriptionsLocked() {
	r.m.BackplaneSubscriptions.Set(float64(r.active + r.waiting.active))
}

// Publish sends payload to channel through Redis, so every node's subscribers receive it.
func (r *Redis) Publish(ctx context.Context, channel string, payload []byte) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return r.pub.Publish(ctx, channel, payload)
}

// Ready returns nil while every Pub/Sub connection is up and Redis answers PING, else the
// first reason it is not.
func (r *Redis) Ready() error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case !r.started:
		r.mu.Unlock()
		return errors.New("redis backplane not started")
	case r.opts.Cluster && r.topo == nil:
		err := r.topoErr
		r.mu.Unlock()
		return fmt.Errorf("redis cluster: %w", err)
	case r.pingErr != nil:
		err := r.pingErr
		r.mu.Unlock()
		return fmt.Errorf("redis ping: %w", err)
	}
	relays := r.relays
	r.mu.Unlock()
	for _, rl := range relays {
		if err := rl.status(); err != nil {
			return err
		}
	}
	return nil
}

// Close drops every subscription (closing the Pub/Sub connections ends them on Redis), stops
// every goroutine and closes the connections.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.active = 0
	r.waiting.reset()
	if r.cancel != nil {
		r.cancel()
	}
	r.reroutedLocked()
	r.mu.Unlock()
	r.wg.Wait()
	r.m.BackplaneSubscriptions.Set(0)
	r.clock.stop(r.m)
	return r.pub.Close()
}

// maintain expires lingering channels and pings Redis, keeping backplane_connected current.
func (r *Redis) maintain(ctx context.Context) {
	sweep := time.NewTicker(sweepInterval(r.opts.Linger))
	defer sweep.Stop()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	r.ping(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sweep.C:
			r.mu.Lock()
			for _, rl := range r.relays {
				rl.expire(now)
			}
			r.mu.Unlock()
		case <-ping.C:
			r.ping(ctx)
		}
	}
}

func (r *Redis) ping(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, pingInterval)
	err := r.pub.Ping(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	was := r.pingErr
	r.pingErr = err
	r.mu.Unlock()
	switch {
	case err != nil && was == nil:
		r.log.Warn("backplane: redis ping failed", "err", err)
	case err == nil && was != nil:
		r.log.Info("backplane: redis answers ping")
	}
	r.updateConnected()
}

// reroutedLocked wakes the Subscribe callers waiting, so they route their channels again:
// the relays changed (a cluster topology rebuild) or the backplane closed.
func (r *Redis) reroutedLocked() {
	close(r.rebuilt)
	r.rebuilt = make(chan struct{})
}

// sweepInterval is how often lingering channels are checked: a quarter of the linger,
// between 10ms and 500ms.
func sweepInterval(linger time.Duration) time.Duration {
	return min(max(linger/4, 10*time.Millisecond), 500*time.Millisecond)
}
