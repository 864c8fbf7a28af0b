package sequence

import (
	"log/slog"
	"sync"
	"unicode/utf8"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// Engine is where the router delivers: the WebSocket engine. Deliver may be called from
// several goroutines at once (the backplane's receive goroutines and the repair workers); per
// stream, calls never overlap and come in the stream's order.
type Engine interface {
	Deliver(batch []registry.Delivery)
}

// Defaults of Options.
const (
	DefaultRepairs       = 16
	DefaultHeldBytes     = 1 << 20
	DefaultNodeHeldBytes = 64 << 20
)

// Options configure a Router.
type Options struct {
	Topics  registry.Topics
	History history.Reader // nil: no history; every hole is a gap ("unavailable")
	// Limit is the most messages one repair delivers (RECOVERY_MAX_MESSAGES); a larger hole
	// is a gap ("limit").
	Limit int
	// Repairs bounds the history reads in flight node-wide (default DefaultRepairs); more
	// streams to repair wait their turn, their live messages held meanwhile.
	Repairs int
	// HeldBytes bounds the payload bytes one stream holds while it is repaired, and
	// NodeHeldBytes those of all streams (defaults DefaultHeldBytes, DefaultNodeHeldBytes).
	// Over either bound the stream's repair is given up: its hole becomes a gap and its held
	// messages flow on.
	HeldBytes, NodeHeldBytes int
	Metrics                  *telemetry.Metrics
	Logger                   *slog.Logger
}

// Router is the backplane's Watcher: it sequences each stream and delivers to the engine.
type Router struct {
	opts   Options
	engine Engine
	m      *telemetry.Metrics
	log    *slog.Logger

	mu        sync.Mutex
	streams   map[string]*stream
	queue     []job // repairs waiting for a worker
	workers   int
	heldBytes int // payload bytes held by every stream
	badUTF8   utf8Log
}

// job is one stream to repair; gen tells a job whose repair was given up meanwhile.
type job struct {
	st  *stream
	gen uint64
}

// New makes a router delivering to engine (which may be set later with SetEngine, before the
// first delivery).
func New(opts Options, engine Engine) *Router {
	if opts.Repairs <= 0 {
		opts.Repairs = DefaultRepairs
	}
	if opts.HeldBytes <= 0 {
		opts.HeldBytes = DefaultHeldBytes
	}
	if opts.NodeHeldBytes <= 0 {
		opts.NodeHeldBytes = DefaultNodeHeldBytes
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Router{opts: opts, engine: engine, m: opts.Metrics, log: opts.Logger, streams: map[string]*stream{}}
}

// SetEngine sets where the router delivers; it must be called before the first delivery.
func (r *Router) SetEngine(e Engine) { r.engine = e }

// SetHistory sets the history repairs read; it must be called before the first delivery.
func (r *Router) SetHistory(h history.Reader) { r.opts.History = h }

// Deliver sequences a batch from the backplane and hands what may go out now to the engine.
// A message in order costs a map lookup and a few comparisons.
func (r *Router) Deliver(batch []backplane.Message) {
	out := make([]registry.Delivery, 0, len(batch))
	var later []job // repairs to start once out is delivered
	unknown := 0
	r.mu.Lock()
	var st *stream
	for i := range batch {
		m := &batch[i]
		if st == nil || st.channel != m.Channel { // a batch often holds runs of one channel
			if st = r.streams[m.Channel]; st == nil {
				t, ok := r.opts.Topics.Parse(m.Channel)
				if !ok {
					unknown++
					continue
				}
				st = &stream{channel: m.Channel, target: t}
				r.streams[st.channel] = st
			}
		}
		if !st.busy {
			var ok bool
			if out, ok = r.placeLocked(st, m, out); ok {
				continue // the hot path: in order
			}
		}
		out = r.feedLocked(st, batch[i:i+1], out, &later)
	}
	r.mu.Unlock()
	if unknown > 0 {
		r.m.Dropped(telemetry.DropUnknown, unknown)
	}
	if len(out) > 0 {
		r.engine.Deliver(out)
	}
	if len(later) > 0 {
		r.mu.Lock()
		for _, j := range later {
			r.startLocked(j)
		}
		r.mu.Unlock()
	}
}

// placeLocked places m on st, appending what goes out now. It reports false, appending
// nothing, when positions are missing before m: the caller holds m and repairs.
func (r *Router) placeLocked(st *stream, m *backplane.Message, out []registry.Delivery) ([]registry.Delivery, bool) {
	switch st.judge(m.Position, m.Prev) {
	case dup:
		return out, true
	case jump:
		return out, false
	case rewound:
		r.m.GapRepair(telemetry.RepairLost)
		if m.Position.Epoch != st.last.Epoch {
			// A new epoch: the rest of the old one is lost, but what the new one published
			// before m may still be in its history.
			st.skipTo(history.Position{Epoch: m.Position.Epoch})
			out = append(out, st.gap(st.last, history.ReasonEpoch, -1))
			return r.placeLocked(st, m, out)
		}
		out = append(out, st.gap(before(m), history.ReasonEpoch, -1))
	}
	if !m.Position.IsZero() {
		st.last = m.Position
	}
	return r.emitLocked(st, m.Payload, m.Position, out), true
}

// emitLocked appends a message of st for the engine, unless its payload is not UTF-8: every
// delivery is a text frame, and a browser fails the connection on invalid text. Such a
// payload is dropped and counted (its position still counts as delivered: it can never be).
// The payload checked is the one the engines write, once per message, before the fan-out.
func (r *Router) emitLocked(st *stream, payload []byte, p history.Position, out []registry.Delivery) []registry.Delivery {
	if !utf8.Valid(payload) {
		r.m.Dropped(telemetry.DropInvalidUTF8, 1)
		r.badUTF8.note(r.log, st.channel, len(payload))
		return out
	}
	return append(out, registry.Delivery{Target: st.target, Payload: payload, Position: p})
}

// feedLocked places msgs on st in order, as the receive goroutine does: once a jump starts a
// repair, the rest is held behind it.
func (r *Router) feedLocked(st *stream, msgs []backplane.Message, out []registry.Delivery, later *[]job) []registry.Delivery {
	for i := 0; i < len(msgs); i++ {
		if st.busy {
			if wait := r.holdLocked(st, msgs[i], &out, later); wait != nil {
				// The stream is being drained to the engine and holds too much: wait for
				// the drain (engine back-pressure, never Redis), then take the message again.
				r.mu.Unlock()
				<-wait
				r.mu.Lock()
				i--
			}
			continue
		}
		var ok bool
		if out, ok = r.placeLocked(st, &msgs[i], out); !ok {
			r.scheduleLocked(st, later)
			r.holdLocked(st, msgs[i], &out, later)
		}
	}
	return out
}

// holdLocked queues m behind st's repair. Over a bound, a repair not yet delivering is given
// up (its gap and the held messages are appended to out); one delivering is waited for: the
// returned channel closes when it is done.
func (r *Router) holdLocked(st *stream, m backplane.Message, out *[]registry.Delivery, later *[]job) (wait <-chan struct{}) {
	st.held = append(st.held, m)
	st.heldBytes += len(m.Payload)
	r.heldBytes += len(m.Payload)
	if st.heldBytes <= r.opts.HeldBytes && r.heldBytes <= r.opts.NodeHeldBytes {
		return nil
	}
	if st.draining {
		st.held = st.held[:len(st.held)-1]
		st.heldBytes -= len(m.Payload)
		r.heldBytes -= len(m.Payload)
		return st.drained
	}
	r.log.Debug("sequence: too much held while repairing a stream; reporting its gap instead", "stream", st.target.Stream(), "held_bytes", st.heldBytes)
	*out = r.giveUpLocked(st, history.Result{Reason: history.ReasonUnavailable, Missed: -1}, *out, later)
	return nil
}

// giveUpLocked ends st's repair with a gap for the hole (res says why) and feeds its held
// messages on.
func (r *Router) giveUpLocked(st *stream, res history.Result, out []registry.Delivery, later *[]job) []registry.Delivery {
	st.gen++
	if st.cancel != nil {
		st.cancel()
		st.cancel = nil
	}
	out = r.gapLocked(st, res, out)
	held := r.takeHeldLocked(st)
	st.busy, st.again = false, false
	return r.feedLocked(st, held, out, later)
}

// gapLocked appends the gap a failed repair of st leaves (res says why), if any, and moves st
// past it.
func (r *Router) gapLocked(st *stream, res history.Result, out []registry.Delivery) []registry.Delivery {
	end, missed, ok := st.hole(res)
	if !ok {
		return out
	}
	at := end
	if at.IsZero() {
		at = st.last // nothing is known of the stream now
	}
	r.m.GapRepair(telemetry.RepairLost)
	st.skipTo(end) // zero: the next message starts the stream afresh
	return append(out, st.gap(at, res.Reason, missed))
}

// takeHeldLocked empties st's held queue and returns it.
func (r *Router) takeHeldLocked(st *stream) []backplane.Message {
	held := st.held
	r.heldBytes -= st.heldBytes
	st.held, st.heldBytes = nil, 0
	return held
}

// Subscriptions applies the backplane's subscription changes: a resumed channel is repaired
// from its last delivered position; a started or stopped one is forgotten (nothing published
// before a fresh subscription is owed to anyone).
func (r *Router) Subscriptions(changes []backplane.Subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range changes {
		st := r.streams[c.Channel]
		if st == nil {
			continue
		}

		switch {
		case c.Change == backplane.Resumed && st.busy:
			st.again = true // the read under way may have begun before the resubscription
		case c.Change == backplane.Resumed && !st.last.IsZero():
			r.scheduleLocked(st, nil)
		case c.Change != backplane.Resumed && !st.busy:
			delete(r.streams, c.Channel)
		}
	}
}

// idle reports whether no stream is being repaired (for tests).
func (r *Router) idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers == 0 && len(r.queue) == 0 && r.heldBytes == 0
}
