package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// What every hostile-input test promises besides its own check: the server does not crash,
// a canary connection keeps getting its echoes promptly throughout, no connection is left
// registered, and the heap returns to where it was before the attack.

// canaryBudget is how much longer than a plain loopback echo (reference, measured at the same
// moment in the same process) the canary may wait for its echo while an attack runs. The test
// machine may be busy with other tests (go test runs packages in parallel, -race slows
// everything, the attack's own clients share the CPU with the server), which delays both
// alike; what the server adds is the canary's own wait. A few slow echoes are tolerated — at
// most canarySlowShare of them, and at least one — but none may exceed the reference by
// canaryStall: that is a stalled server. canaryGiveUp bounds the wait for one echo.
const (
	canaryBudget    = 250 * time.Millisecond
	canarySlowShare = 0.1
	canaryStall     = 3 * time.Second
	canaryGiveUp    = 10 * time.Second
)

// canaryInterval is the canary's pace: one echo round trip every interval.
const canaryInterval = 20 * time.Millisecond

// heapTolerance is how far HeapInuse may stay above the baseline once an attack is over (the
// test's own clients, timers and pools come and go around it).
const heapTolerance = 8 << 20

// harness is one service under attack, with its canary.
type harness struct {
	t        *testing.T
	engine   string
	svc      *servicetest.Service
	canary   *canary
	baseline uint64
	conns    []*Conn // the attack's connections, dropped by finish
}

// newHarness starts a service over engine with env, connects the canary and records the heap.
func newHarness(t *testing.T, engine string, env map[string]string) *harness {
	t.Helper()
	svc := servicetest.Start(t, servicetest.Options{Engine: engine, Env: env})
	h := &harness{t: t, engine: engine, svc: svc}
	h.canary = startCanary(t, svc)
	h.baseline = heapInuse()
	return h
}

// dial opens a raw connection for user sub in groups, failing the test on a refused handshake.
func (h *harness) dial(o DialOptions, sub string, groups ...string) *Conn {
	h.t.Helper()
	c, err := Dial(h.svc.Addr, "/ws?token="+h.svc.Token(h.t, sub, groups...), o)
	if err != nil {
		h.t.Fatalf("dial %s: %v", sub, err)
	}
	h.conns = append(h.conns, c)
	h.t.Cleanup(func() { c.Close() })
	return c
}

// finish checks the promises above: the canary was served throughout and still is after the
// attack's connections are gone, only the canary is still registered, and the heap is back
// within heapTolerance of the baseline.
func (h *harness) finish() {
	h.t.Helper()
	for _, c := range h.conns {
		c.Close()
	}
	h.canary.awaitRounds(3, 5*time.Second)
	h.canary.stopAndCheck(h.t)
	h.svc.WaitMetric(h.t, "websocket_connections_active", 1, 15*time.Second)
	var now uint64
	if !testenv.Until(10*time.Second, func() bool { now = heapInuse(); return now <= h.baseline+heapTolerance }) {
		h.t.Errorf("%s: heap in use %.1f MiB 10s after the attack, baseline %.1f MiB (tolerance %.0f MiB)",
			h.engine, mib(now), mib(h.baseline), mib(heapTolerance))
		return
	}
	h.t.Logf("%s: heap in use %.1f MiB, baseline %.1f MiB", h.engine, mib(now), mib(h.baseline))
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// heapInuse is HeapInuse after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// canary is a client that keeps asking for echoes and records the slowest.
type canary struct {
	conn   *Conn
	ref    *reference
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	errs   []string
	slow   []time.Duration // echoes over the reference's by more than canaryBudget
	worst  time.Duration
	excess time.Duration // the most an echo took over the reference's
	rounds atomic.Int64
}

func startCanary(t *testing.T, svc *servicetest.Service) *canary {
	t.Helper()
	conn, err := Dial(svc.Addr, "/ws?token="+svc.Token(t, "canary"), DialOptions{})
	if err != nil {
		t.Fatalf("canary: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.StartReading()
	c := &canary{conn: conn, ref: startReference(t), stop: make(chan struct{}), done: make(chan struct{})}
	if err := c.roundTrip(0, time.Second); err != nil { // warm up before any budget applies
		t.Fatalf("canary: %v", err)
	}
	go c.run()
	return c
}

func (c *canary) roundTrip(i int, wait time.Duration) error {
	text := fmt.Sprintf("canary %d", i)
	if err := c.conn.Send(Text(text)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	e, ok := c.conn.NextData(wait)
	if !ok {
		return fmt.Errorf("no echo of %q within %v", text, wait)
	}
	if want := echoText(text); !sameEvents([]Event{e}, []Event{want}) {
		return fmt.Errorf("got %s, want %s", e, want)
	}
	return nil
}

func (c *canary) run() {
	defer close(c.done)
	tick := time.NewTicker(canaryInterval)
	defer tick.Stop()
	for i := 1; ; i++ {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		refTook := make(chan time.Duration, 1)
		go func() { refTook <- c.ref.roundTrip() }()
		started := time.Now()
		err := c.roundTrip(i, canaryGiveUp)
		took := time.Since(started)
		excess := took - <-refTook
		if err == nil && excess > canaryStall {
			err = fmt.Errorf("echo %d took %v, %v more than a plain loopback echo", i, took, excess)
		}
		c.rounds.Add(1)
		c.mu.Lock()
		c.worst = max(c.worst, took)
		c.excess = max(c.excess, excess)
		if err != nil {
			c.errs = append(c.errs, err.Error())
		} else if excess > canaryBudget {
			c.slow = append(c.slow, took)
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// awaitRounds waits until the canary has made n more round trips (or gives up after timeout;
// stopAndCheck then reports why).
func (c *canary) awaitRounds(n int64, timeout time.Duration) {
	target := c.rounds.Load() + n
	deadline := time.Now().Add(timeout)
	for c.rounds.Load() < target && time.Now().Before(deadline) {
		select {
		case <-c.done:
			return
		case <-time.After(canaryInterval):
		}
	}
}

func (c *canary) stopAndCheck(t *testing.T) {
	t.Helper()
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	rounds := c.rounds.Load()
	t.Logf("canary: %d echoes, slowest %v, at most %v over a plain loopback echo, %d more than %v over",
		rounds, c.worst.Round(time.Microsecond), c.excess.Round(time.Microsecond), len(c.slow), canaryBudget)
	if len(c.errs) > 0 {
		t.Errorf("canary stalled: %s", c.errs[0])
	}
	if allowed := max(1, int(float64(rounds)*canarySlowShare)); len(c.slow) > allowed {
		t.Errorf("canary: %d of %d echoes took more than %v longer than a plain loopback echo (at most %d may): %v",
			len(c.slow), rounds, canaryBudget, allowed, c.slow)
	}
}

// reference is a plain TCP echo over loopback in the test's process, its replies read by a
// goroutine of their own and handed over on a channel as the canary's are: the time its round
// trip takes is what the machine's load alone costs an echo at that moment.
type reference struct {
	conn    net.Conn
	replies chan struct{}
}

func startReference(t *testing.T) *reference {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reference echo: %v", err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
		_, _ = io.Copy(nc, nc)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("reference echo: %v", err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("reference echo: accept failed")
	}
	t.Cleanup(func() { conn.Close(); server.Close() })
	r := &reference{conn: conn, replies: make(chan struct{}, 1)}
	go func() {
		var buf [referenceSize]byte
		for {
			if _, err := io.ReadFull(conn, buf[:]); err != nil {
				close(r.replies)
				return
			}
			r.replies <- struct{}{}
		}
	}()
	return r
}

const referenceSize = 16

// roundTrip is one echo; a failed one counts as taking no time (the canary's own echo is then
// judged on its own).
func (r *reference) roundTrip() time.Duration {
	started := time.Now()
	var buf [referenceSize]byte
	if _, err := r.conn.Write(buf[:]); err != nil {
		return 0
	}
	select {
	case _, ok := <-r.replies:
		if !ok {
			return 0
		}
	case <-time.After(canaryGiveUp):
		return 0
	}
	return time.Since(started)
}

// failure is how the server ended a connection it failed: the close frame (if any) and the
// messages it sent before it.
type failure struct {
	before []Event
	close  *Event
}

// awaitFailure reads until the server's close frame or EOF (within timeout) and answers a
// close frame as a client must. It reports the messages seen before.
func awaitFailure(c *Conn, timeout time.Duration) (failure, error) {
	var f failure
	deadline := time.Now().Add(timeout)
	for {
		e, ok := c.NextData(time.Until(deadline))
		if !ok {
			return f, fmt.Errorf("connection still open after %v", timeout)
		}
		switch e.Kind {
		case EventClose:
			f.close = &e
			_ = c.Send(Close(e.Code, ""))
			return f, nil
		case EventEOF:
			return f, nil
		case EventBad:
			return f, errors.New(e.Err.Error())
		}
		f.before = append(f.before, e)
	}
}

// expectClose checks that the server failed c with one of codes within timeout, then closed TCP.
func expectClose(t *testing.T, c *Conn, timeout time.Duration, codes ...uint16) failure {
	t.Helper()
	f, err := awaitFailure(c, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if f.close == nil {
		t.Fatalf("TCP closed without a close frame (1006) after %s; want close %v", events(f.before), codes)
	}
	if !slices.Contains(codes, f.close.Code) {
		t.Fatalf("close %d (%q), want one of %v (after %s)", f.close.Code, f.close.Reason, codes, events(f.before))
	}
	if e, ok := c.NextData(5 * time.Second); !ok || e.Kind != EventEOF {
		t.Fatalf("TCP not closed after the closing handshake (next: %v)", e)
	}
	return f
}

// noLinger makes a dialed connection reset on Close instead of lingering in TIME_WAIT, so
// thousands of short connections do not exhaust loopback ports.
func noLinger(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}
