package sequence

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/registry"
)

// recorder is an Engine that keeps every delivery per stream, in order.
type recorder struct {
	mu  sync.Mutex
	got map[registry.Target][]registry.Delivery
}

func newRecorder() *recorder { return &recorder{got: map[registry.Target][]registry.Delivery{}} }

func (e *recorder) Deliver(batch []registry.Delivery) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range batch {
		e.got[d.Target] = append(e.got[d.Target], d)
	}
}

func (e *recorder) stream(t registry.Target) []registry.Delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]registry.Delivery(nil), e.got[t]...)
}

// swappable is a history whose store can be replaced, as a Redis restarted without
// persistence replaces its streams' epochs.
type swappable struct {
	mu  sync.Mutex
	cur *history.Memory
}

func (s *swappable) store() *history.Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *swappable) Read(ctx context.Context, channel string, after history.Position, limit int) (history.Result, error) {
	return s.store().Read(ctx, channel, after, limit)
}

// clock is a time source the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var testTopics = registry.Topics{UserPrefix: "ws:", GroupPrefix: "ws-group:", Broadcast: "ws-broadcast"}

// sent is one message the model published: its position (zero: plain) and payload.
type sent struct {
	pos     history.Position
	payload string
	live    bool // it was handed to the router live (not lost on the wire)
}

// model drives one random case.
type model struct {
	t       *testing.T
	rnd     *rand.Rand
	hist    *swappable
	clk     *clock
	limits  history.Limits
	router  *Router
	rec     *recorder
	chans   []string
	pending []backplane.Message
	pub     map[string][]sent
	// clean: the history never lost anything a repair needed (no trim, expiry, epoch change
	// or limit could apply), so nothing may be reported lost.
	clean bool
	n     int
	epoch uint64 // of the last message published with a position
	trace []string
}

func (m *model) publish(ch string, plain, live bool) {
	m.n++
	payload := fmt.Sprintf("%s#%d", ch, m.n)
	msg := backplane.Message{Channel: ch, Payload: []byte(payload)}
	if !plain {
		e := m.hist.store().Append(ch, []byte(payload), "")
		msg.Position, msg.Prev = e.Position, e.Prev
		m.epoch = e.Position.Epoch
	}
	m.pub[ch] = append(m.pub[ch], sent{pos: msg.Position, payload: payload, live: live})
	m.trace = append(m.trace, fmt.Sprintf("pub %s %d.%d live=%v", ch, msg.Position.Epoch%1000, msg.Position.Seq, live))
	if live {
		m.pending = append(m.pending, msg)
	}
}

// flush hands the pending messages to the router in batches of random sizes.
func (m *model) flush() {
	for len(m.pending) > 0 {
		n := 1 + m.rnd.IntN(len(m.pending))
		batch := append([]backplane.Message(nil), m.pending[:n]...)
		m.pending = m.pending[n:]
		m.trace = append(m.trace, fmt.Sprintf("deliver %d", n))
		m.router.Deliver(batch)
	}
}

func (m *model) step() {
	ch := m.chans[m.rnd.IntN(len(m.chans))]
	switch k := m.rnd.IntN(100); {
	case k < 55: // a live sequenced message
		m.publish(ch, false, true)
	case k < 65: // a plain message
		m.publish(ch, true, true)
	case k < 75: // lost on the wire
		m.publish(ch, false, false)
	case k < 80: // a duplicate of something already received
		// Plain messages cannot be told apart, and a copy arrives in publish order on its own
		// connection (after every message of an older epoch): only sequenced ones of this epoch.
		if len(m.pending) > 0 {
			if d := m.pending[m.rnd.IntN(len(m.pending))]; !d.Position.IsZero() && d.Position.Epoch == m.epoch {
				m.pending = append(m.pending, d)
			}
		}
	case k < 88: // the Pub/Sub connection drops and returns: a burst is lost, then resumed
		m.flush()
		for range m.rnd.IntN(6) {
			m.publish(ch, m.rnd.IntN(5) == 0, false)
		}
		m.trace = append(m.trace, "resume "+ch)
		m.router.Subscriptions([]backplane.Subscription{{Channel: ch, Change: backplane.Resumed}})
	case k < 96 || m.clean:
		m.flush()
	case k < 98: // TTL passes
		m.clean = false
		m.clk.advance(m.limits.TTL)
		m.trace = append(m.trace, "ttl")
	default: // Redis restarts without persistence: a new epoch
		m.clean = false
		m.clk.advance(time.Millisecond)
		mem, err := history.NewMemory(m.limits, m.clk.Now)
		if err != nil {
			m.t.Fatal(err)
		}
		m.trace = append(m.trace, "new epoch")
		m.hist.mu.Lock()
		m.hist.cur = mem
		m.hist.mu.Unlock()
	}
}

// awaitIdle waits until no repair is under way.
func awaitIdle(t *testing.T, r *Router) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "repairs finished", r.idle)
}

// check verifies one stream's output against what was published on it.
func (m *model) check(ch string, seed uint64) {
	tg, _ := testTopics.Parse(ch)
	out := m.rec.stream(tg)
	fail := func(format string, a ...any) {
		m.t.Helper()
		m.t.Fatalf("seed %d, %s: %s\noutput: %s\ntrace: %v", seed, ch, fmt.Sprintf(format, a...), describe(out), m.trace)
	}
	delivered := map[history.Position]int{}
	var cur history.Position
	type span struct{ from, to history.Position } // a gap: positions after from up to to
	var gaps []span
	// open: the last gap knew nothing of the stream (it is at the last position delivered):
	// the next message starts the stream afresh, and the gap spans up to it.
	open := false
	var plains []string
	for _, d := range out {
		switch {
		case d.Gap != nil:
			if m.clean {
				fail("a gap (%s) although history held everything", d.Gap.Reason)
			}
			if !cur.IsZero() && d.Position.Epoch == cur.Epoch && d.Position.Seq < cur.Seq {
				fail("a gap at %v goes back from %v", d.Position, cur)
			}
			open = !cur.IsZero() && d.Position == cur
			gaps = append(gaps, span{cur, d.Position})
			cur = d.Position
		case d.Position.IsZero():
			plains = append(plains, string(d.Payload))
		default:
			if delivered[d.Position] > 0 {
				fail("%v delivered twice", d.Position)
			}
			delivered[d.Position]++
			if open {
				gaps[len(gaps)-1].to = history.Position{Epoch: d.Position.Epoch, Seq: d.Position.Seq - 1}
				open = false
			} else if !cur.IsZero() && (d.Position.Epoch != cur.Epoch || d.Position.Seq != cur.Seq+1) {
				fail("%v follows %v without a gap", d.Position, cur)
			}
			cur = d.Position
		}
	}
	var wantPlain []string
	started := false
	for _, s := range m.pub[ch] {
		if s.pos.IsZero() {
			if s.live {
				wantPlain = append(wantPlain, s.payload)
			}
			continue
		}
		if delivered[s.pos] > 0 {
			started = true
			continue
		}
		if !started {
			continue // before the first message the stream delivered: nobody was owed it
		}
		covered := false
		for _, g := range gaps {
			if (g.from.Epoch != s.pos.Epoch || g.from.Seq < s.pos.Seq) && (g.to.Epoch != s.pos.Epoch || s.pos.Seq <= g.to.Seq) {
				covered = true
				break
			}
		}
		if !covered {
			fail("%v lost without a gap covering it", s.pos)
		}
	}
	if fmt.Sprint(plains) != fmt.Sprint(wantPlain) {
		fail("plain messages %v, want %v", plains, wantPlain)
	}
}

// TestEveryStreamIsContiguousOrHasAnExplicitGap drives the router through random interleavings
// of live messages, messages lost on the wire, duplicates, resumed subscriptions, expiry,
// trimming, repair limits and new epochs, and checks that each stream's output is its
// positions in order, each once, with a gap notice covering every hole, that plain messages
// keep their order, and that nothing is reported lost while the history held everything.
func TestEveryStreamIsContiguousOrHasAnExplicitGap(t *testing.T) {
	cases := 2000
	if testing.Short() {
		cases = 300
	}
	for seed := range uint64(cases) {
		rnd := rand.New(rand.NewPCG(seed, 0x5eed))
		clk := &clock{now: time.Unix(1_700_000_000, 0)}
		// A third of the cases keep every message in history and never lose it: nothing may
		// be reported lost there. The others trim, expire and restart it.
		clean := seed%3 == 0
		limits := history.Limits{Size: 4 + rnd.IntN(60), TTL: time.Minute}
		if clean {
			limits.Size = 10_000
		}
		mem, err := history.NewMemory(limits, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		m := &model{
			t: t, rnd: rnd, clk: clk, limits: limits, rec: newRecorder(),
			hist:  &swappable{cur: mem},
			chans: []string{"ws:ann", "ws-group:class7", "ws-broadcast"},
			pub:   map[string][]sent{},
			clean: clean,
		}
		limit := 1 + rnd.IntN(limits.Size+20)
		if clean {
			limit = limits.Size
		}
		held := 64 + rnd.IntN(4096) // small enough that repairs are given up at times
		if clean {
			held = 1 << 20
		}
		m.router = New(Options{Topics: testTopics, History: m.hist, Limit: limit, Repairs: 1 + rnd.IntN(3), HeldBytes: held}, m.rec)
		steps := 20 + rnd.IntN(200)
		for range steps {
			m.step()
		}
		// End every stream with a live message or a resumed subscription, so that each of its
		// holes shows.
		for _, ch := range m.chans {
			if rnd.IntN(2) == 0 {
				m.publish(ch, false, true)
			}
		}
		m.flush()
		for _, ch := range m.chans {
			m.router.Subscriptions([]backplane.Subscription{{Channel: ch, Change: backplane.Resumed}})
		}
		awaitIdle(t, m.router)
		for _, ch := range m.chans {
			m.check(ch, seed)
		}
	}
}

func describe(out []registry.Delivery) string {
	s := ""
	for _, d := range out {
		switch {
		case d.Gap != nil:
			s += fmt.Sprintf(" [gap %s %d to %d.%d]", d.Gap.Reason, d.Gap.Missed, d.Position.Epoch%1000, d.Position.Seq)
		case d.Position.IsZero():
			s += " " + string(d.Payload)
		default:
			s += fmt.Sprintf(" %d.%d", d.Position.Epoch%1000, d.Position.Seq)
		}
	}
	return s
}
