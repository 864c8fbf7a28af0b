// Package seqtest checks reliable delivery end to end: a publisher that numbers its messages
// per channel (1, 2, 3, … in each), and a checker that tells, for what one client received,
// whether every message of each of its channels arrived exactly once and in order, or was
// inside a hole the service reported. Not for production code.
package seqtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Via publishes payload on channel one way (the HTTP API, FCALL ws_publish, …). An error means
// the message may or may not have been published.
type Via func(ctx context.Context, channel, payload string) error

// Payload is the message for number seq of channel: `{"ch":"<channel>","seq":<seq>}`.
func Payload(channel string, seq int) string {
	ch, _ := json.Marshal(channel)
	return fmt.Sprintf(`{"ch":%s,"seq":%d}`, ch, seq)
}

// Parse reads a payload made by Payload.
func Parse(data []byte) (channel string, seq int, err error) {
	var p struct {
		Ch  string `json:"ch"`
		Seq int    `json:"seq"`
	}
	if err := json.Unmarshal(data, &p); err != nil || p.Ch == "" || p.Seq < 1 {
		return "", 0, fmt.Errorf("not a sequenced test payload: %.100q", data)
	}
	return p.Ch, p.Seq, nil
}

// Publisher numbers messages per channel and records, for each number, whether the publish
// was acknowledged (it happened) or failed (it may have happened).
type Publisher struct {
	via      []Via
	channels []string

	mu     sync.Mutex
	ledger map[string][]bool // channel → acknowledged, by seq-1
	total  int               // publishes attempted
	failed int
	errs   []string // the first few failures

	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	started bool
}

// New is a publisher over channels that spreads its publishes over the given ways, in turn.
func New(channels []string, via ...Via) *Publisher {
	p := &Publisher{via: via, channels: channels, ledger: map[string][]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, ch := range channels {
		p.ledger[ch] = nil
	}
	return p
}

// One publishes the next number of channel with the n-th way (modulo their count) and
// reports the error, if any.
func (p *Publisher) One(ctx context.Context, channel string, n int) error {
	p.mu.Lock()
	seq := len(p.ledger[channel]) + 1
	p.ledger[channel] = append(p.ledger[channel], false)
	p.total++
	p.mu.Unlock()
	err := p.via[n%len(p.via)](ctx, channel, Payload(channel, seq))
	p.mu.Lock()
	if err == nil {
		p.ledger[channel][seq-1] = true
	} else {
		p.failed++
		if len(p.errs) < 5 {
			p.errs = append(p.errs, fmt.Sprintf("%s #%d: %v", channel, seq, err))
		}
	}
	p.mu.Unlock()
	return err
}

// Run publishes, one every interval, round-robin over the channels (each round with the next
// way), until Stop, at most max messages, each publish bounded by timeout. Failures are
// recorded, not fatal: faults are what the tests inject.
func (p *Publisher) Run(t testing.TB, interval, timeout time.Duration, max int) {
	t.Helper()
	p.started = true
	go func() {
		defer close(p.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := 0; n < max; n++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_ = p.One(ctx, p.channels[n%len(p.channels)], n/len(p.channels))
			cancel()
		}
	}()
	t.Cleanup(p.Stop)
}

// Stop ends Run and waits for its last publish. Call it from the goroutine that called Run.
func (p *Publisher) Stop() {
	p.once.Do(func() { close(p.stop) })
	if !p.started {
		return
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
	}
}

// Counts are how many publishes were attempted and how many failed.
func (p *Publisher) Counts() (total, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total, p.failed
}

// Errors are the first few failures.
func (p *Publisher) Errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

// LastAcked is the highest acknowledged number of channel (0 when none).
func (p *Publisher) LastAcked(channel string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.ledger[channel]
	for i := len(l) - 1; i >= 0; i-- {
		if l[i] {
			return i + 1
		}
	}
	return 0
}

// acked is a copy of channel's ledger.
func (p *Publisher) acked(channel string) []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]bool(nil), p.ledger[channel]...)
}
