package sequence

import (
	"context"
	"errors"
	"time"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// maxReads bounds the reads in a row that move a repaired stream nowhere while it still has a
// hole (a history that does not hold what its live messages claim): the hole is then
// reported as unavailable. A read that delivers something starts the count again.
const maxReads = 3

// retryPause is the longest a repair waits between reads of a history that could not be read,
// unless the subscription resumes sooner (which says Redis is back).
const retryPause = time.Second

// errNoHistory answers every read when the router has no history.
var errNoHistory = errors.New("no history to repair from")

// scheduleLocked makes st busy and queues its repair. With later set, the repair is only
// added to it: the caller has deliveries of st not yet handed to the engine, and starts the
// repair (startLocked) once they are, so that the repair's own deliveries come after them.
func (r *Router) scheduleLocked(st *stream, later *[]job) {
	st.busy, st.again = true, false
	st.gen++
	if later != nil {
		*later = append(*later, job{st: st, gen: st.gen})
		return
	}
	r.startLocked(job{st: st, gen: st.gen})
}

// startLocked queues a repair, starting a worker when fewer than Options.Repairs run.
func (r *Router) startLocked(j job) {
	r.queue = append(r.queue, j)
	if r.workers < r.opts.Repairs {
		r.workers++
		go r.work()
	}
}

// work repairs queued streams until none is left.
func (r *Router) work() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.queue) > 0 {
		j := r.queue[0]
		r.queue[0] = job{}
		r.queue = r.queue[1:]
		if j.st.gen == j.gen {
			r.repairLocked(j)
		}
	}
	r.queue = nil // let the backing array go
	r.workers--
}

// repairLocked reads j's stream's history after the last position delivered, delivers what
// it finds (or the gap), then the messages held meanwhile, reading again when they still jump
// or the subscription resumed meanwhile. It is called and returns with r.mu held, and releases
// it around every read and delivery. Until it makes the stream idle again, it alone delivers
// the stream's messages, so they reach the engine in order.
func (r *Router) repairLocked(j job) {
	st := j.st
	stuck := 0         // reads in a row that moved the stream nowhere
	var down time.Time // when the reads began to fail (zero: the last one did not)
	for {
		ctx, cancel := context.WithCancel(context.Background())
		st.cancel, st.again = cancel, false
		after := st.last
		r.mu.Unlock()
		res, err := r.read(ctx, st.channel, after)
		r.mu.Lock()
		if st.gen != j.gen {
			cancel()
			return // given up meanwhile: its gap and held messages went out already
		}
		if err != nil {
			// Debug: during a Redis outage every stream would say it; the gap it becomes is
			// counted in backplane_gap_repairs_total{result="lost"}.
			r.log.Debug("sequence: cannot read a stream's history to repair it", "stream", st.target.Stream(), "err", err)
			if r.retryLocked(ctx, st, err, &down) {
				cancel()
				if st.gen != j.gen {
					return
				}
				st.cancel = nil
				continue
			}
		}
		cancel()
		st.cancel = nil
		d := drain{res: res, last: stuck+1 >= maxReads}
		if !res.Recovered {
			d.out = r.gapLocked(st, res, nil)
		} else {
			d.entries = res.Entries
			if h := st.firstOwed(); h != nil {
				r.fillLocked(st, &d, h.Position)
			}
		}
		again := r.drainLocked(st, &d)
		if d.filled > 0 {
			r.m.GapRepair(telemetry.RepairRepaired)
		}
		if !again {
			return
		}
		if st.last == after {
			stuck++
		} else {
			stuck = 0
		}
	}
}

// retryLocked decides whether a failed history read is tried again rather than reported as
// a gap: the history store being unreachable (Redis restarting) is no answer about the
// stream, which Redis may well still hold. It waits (with r.mu released) until the
// subscription resumes, a short pause passes or the repair is given up (ctx ends: the held
// bound was exceeded), and reports true; once the reads have failed for Options.Outage, it
// reports false and the hole becomes a gap ("unavailable").
func (r *Router) retryLocked(ctx context.Context, st *stream, err error, down *time.Time) bool {
	if errors.Is(err, errNoHistory) || ctx.Err() != nil {
		return false
	}
	now := time.Now()
	if down.IsZero() {
		*down = now
	}
	if now.Sub(*down) >= r.opts.Outage {
		return false
	}
	if st.again {
		return true // resumed while reading: Redis is back, read at once
	}
	wake := make(chan struct{})
	st.wake = wake
	r.mu.Unlock()
	t := time.NewTimer(retryPause)
	select {
	case <-wake:
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	r.mu.Lock()
	if st.wake == wake {
		st.wake = nil
	}
	return true
}

func (r *Router) read(ctx context.Context, channel string, after history.Position) (history.Result, error) {
	if r.opts.History == nil {
		return history.Result{Reason: history.ReasonUnavailable, Missed: -1}, errNoHistory
	}
	return r.opts.History.Read(ctx, channel, after, r.opts.Limit)
}

// drain is one read's answer being delivered with the messages held behind it.
type drain struct {
	res     history.Result
	entries []history.Entry // the read's entries not yet placed
	out     []registry.Delivery
	filled  int  // entries delivered
	last    bool // the repair's last read: report what is still missing as a gap
}

// fillLocked appends the read's entries that come before position upTo in st's epoch (all of
// them when upTo is zero), skipping those delivered already. Entries wait for the held message
// they come before: a plain message held ahead of that one was published before them.
func (r *Router) fillLocked(st *stream, d *drain, upTo history.Position) {
	for len(d.entries) > 0 {
		e := &d.entries[0]
		if !upTo.IsZero() && (upTo.Epoch != e.Position.Epoch || e.Position.Seq >= upTo.Seq) {
			return
		}
		if st.judge(e.Position, e.Prev) == pass {
			st.last = e.Position
			d.out = r.emitLocked(st, e.Payload, e.Position, d.out)
			d.filled++
		}
		d.entries = d.entries[1:]
	}
}

// drainLocked delivers d.out, then the messages held behind the repair with the read's entries
// merged in before each held message they precede, until none is left (st becomes idle;
// false) or another read is needed (true): a held message still jumps, the stream is still
// behind the position the read reported (a failed read's gap ends at the first held message,
// but what was lost after the last one is owed too), or the subscription resumed meanwhile.
// On the repair's last read such a hole is reported as a gap instead.
func (r *Router) drainLocked(st *stream, d *drain) (again bool) {
	st.draining, st.drained = true, make(chan struct{})
	defer func() {
		st.draining = false
		close(st.drained)
	}()
	for {
		if len(d.out) > 0 {
			r.mu.Unlock()
			r.engine.Deliver(d.out)
			r.mu.Lock()
			d.out = nil
		}
		if st.again {
			return true
		}
		held := r.takeHeldLocked(st)
		if len(held) == 0 {
			r.fillLocked(st, d, history.Position{})
			if len(d.out) > 0 {
				continue
			}
			top := d.res.Cursor
			if !top.IsZero() && top.Epoch != st.last.Epoch && top.Epoch != st.left {
				// The history moved to another epoch after the last message held: the
				// rest of the old one is lost.
				d.out = append(d.out, st.gap(top, history.ReasonEpoch, -1))
				r.m.GapRepair(telemetry.RepairLost)
				st.skipTo(top)
				continue
			}
			if top.Epoch != st.last.Epoch || top.Seq <= st.last.Seq {
				st.busy = false
				return false
			}
			if !d.last {
				return true
			}
			reason := d.res.Reason
			if d.res.Recovered {
				reason = history.ReasonUnavailable
			}
			d.out = append(d.out, st.gap(top, reason, int64(top.Seq-st.last.Seq)))
			r.m.GapRepair(telemetry.RepairLost)
			st.skipTo(top)
			continue
		}
		for i := range held {
			m := &held[i]
			if !m.Position.IsZero() {
				r.fillLocked(st, d, m.Position)
			}
			var ok bool
			if d.out, ok = r.placeLocked(st, m, d.out); ok {
				continue
			}
			if !d.last {
				// Still a hole before it: put it and the rest back and read again.
				r.putBackLocked(st, held[i:])
				if len(d.out) > 0 {
					r.mu.Unlock()
					r.engine.Deliver(d.out)
					r.mu.Lock()
				}
				return true
			}
			end := before(m)
			d.out = append(d.out, st.gap(end, history.ReasonUnavailable, int64(end.Seq-st.last.Seq)))
			r.m.GapRepair(telemetry.RepairLost)
			st.skipTo(end)
			d.out, _ = r.placeLocked(st, m, d.out)
		}
	}
}

// putBackLocked puts msgs back at the front of st's held queue.
func (r *Router) putBackLocked(st *stream, msgs []backplane.Message) {
	rest := append(msgs, st.held...)
	for _, m := range msgs {
		st.heldBytes += len(m.Payload)
		r.heldBytes += len(m.Payload)
	}
	st.held = rest
}
