package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// echoTimeout is how long an echo may take before the round trip counts as lost.
const echoTimeout = 5 * time.Second

// goSignal is what the parent tells every process once its own part of the scenario (the
// publishing, the memory reading) is done.
type goSignal struct {
	PublishEndNs int64 `json:"publish_end_ns,omitempty"`
}

// share is one process's part of a run: it opens its connections, then on the go signal
// does its local phase and reports.
type share struct {
	p     *Params
	f     *fleet
	start time.Time
	end   time.Time
	conn  int

	closeOnce sync.Once
}

func newShare(p *Params) (*share, error) {
	tokens, err := NewTokens(p.Tokens)
	if err != nil {
		return nil, err
	}
	if !tokens.Minted() && p.usesPublisher() {
		return nil, fmt.Errorf("%s must know who each connection is to count deliveries: give --secret or --key-file, not --token-file", p.Scenario)
	}
	f, err := newFleet(p, tokens)
	if err != nil {
		return nil, err
	}
	return &share{p: p, f: f}, nil
}

// connect opens the share's connections (none for churn, which opens its own as it goes).
func (s *share) connect(ctx context.Context) int {
	if s.p.Scenario == ScenarioChurn {
		s.start, s.end = time.Now(), time.Now()
		return 0
	}
	s.start, s.end = s.f.connectAll(ctx)
	s.conn = s.f.open()
	return s.conn
}

// finish runs the local phase and reports; the connections stay open until close.
func (s *share) finish(ctx context.Context, g goSignal) Part {
	var churn churnStats
	var echoSecs float64
	switch s.p.Scenario {
	case ScenarioFanout, ScenarioClassroom, ScenarioBroadcast:
		s.f.awaitDeliveries(ctx, s.f.expected(), time.Unix(0, g.PublishEndNs))
	case ScenarioEcho:
		echoSecs = s.echo(ctx)
	case ScenarioChurn:
		churn = s.churn(ctx)
	}
	part := partOf(s.f, s.conn, s.start, s.end)
	part.EchoSeconds = echoSecs
	part.ChurnCycles, part.ChurnErrors, part.ChurnBehind = churn.cycles, churn.errors, churn.behind
	if s.p.Scenario == ScenarioChurn {
		part.Connected = churn.cycles
		part.DialErrors = addCounts(nil, s.f.dialErrors)
	}
	return part
}

// close closes every connection of the share, once.
func (s *share) close() {
	s.closeOnce.Do(s.f.closeAll)
}

// echo has every open connection send a text frame and wait for its echo, back to back,
// for p.Duration.
func (s *share) echo(ctx context.Context) float64 {
	ctx, cancel := context.WithTimeout(ctx, s.p.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var lost atomic.Int64
	for _, c := range s.f.conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 64)
			for seq := int64(0); ctx.Err() == nil; seq++ {
				sent := time.Now()
				buf = append(buf[:0], `{"e":`...)
				buf = strconv.AppendInt(buf, seq, 10)
				buf = append(buf, '}')
				if err := c.socket.WriteString(string(buf)); err != nil {
					lost.Add(1)
					return
				}
				if !c.awaitEcho(ctx, seq) {
					if ctx.Err() == nil {
						lost.Add(1)
					}
					return
				}
				s.f.echoRTT.RecordDuration(time.Since(sent))
				s.f.echoes.Add(1)
			}
		}()
	}
	wg.Wait()
	s.f.mu.Lock()
	s.f.echoLost = lost.Load()
	s.f.mu.Unlock()
	return time.Since(start).Seconds()
}

// awaitEcho waits for the echo of seq, skipping stale ones.
func (c *client) awaitEcho(ctx context.Context, seq int64) bool {
	t := time.NewTimer(echoTimeout)
	defer t.Stop()
	for {
		select {
		case got := <-c.echo:
			if got == seq {
				return true
			}
		case <-c.closed:
			return false
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

type churnStats struct{ cycles, errors, behind int }

// churn opens connections at p.Rate/p.Procs per second for p.Duration; each stays
// p.ChurnHold, then closes normally. A cycle fails when the dial fails or the server closes
// the connection first. Ticks that find too many cycles in flight are skipped and counted.
func (s *share) churn(ctx context.Context) churnStats {
	rate := s.p.Rate / float64(s.p.Procs)
	interval := time.Duration(float64(time.Second) / rate)
	maxInFlight := churnInFlight(s.p)
	sem := make(chan struct{}, maxInFlight)
	stop := time.Now().Add(s.p.Duration)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var st churnStats
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := s.p.Hi - s.p.Lo
	for i := 0; time.Now().Before(stop) && ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			st.behind++
			continue
		}
		wg.Add(1)
		go func(idx int) {
			defer func() { <-sem; wg.Done() }()
			ok := s.cycle(ctx, idx)
			mu.Lock()
			if ok {
				st.cycles++
			} else {
				st.errors++
			}
			mu.Unlock()
		}(s.p.Lo + i%n)
	}
	wg.Wait()
	return st
}

// churnInFlight bounds the cycles one process runs at once: enough for the hold time at the
// target rate, with room for slow handshakes.
func churnInFlight(p *Params) int {
	perProc := p.Rate / float64(p.Procs)
	return max(64, int(perProc*(p.ChurnHold.Seconds()+2)))
}

// cycle is one connect, hold, close.
func (s *share) cycle(ctx context.Context, idx int) bool {
	c, err := s.f.dial(ctx, idx)
	if err != nil {
		s.f.noteDialError(err)
		return false
	}
	if s.p.ChurnHold > 0 {
		t := time.NewTimer(s.p.ChurnHold)
		select {
		case <-t.C:
		case <-c.closed:
		case <-ctx.Done():
		}
		t.Stop()
	}
	c.mu.Lock()
	byServer := c.gotClose
	c.mu.Unlock()
	c.close()
	return !byServer
}
