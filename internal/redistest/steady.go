package redistest

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Steady is a backend publishing a numbered sequence at a steady pace, for tests of what a
// stall or outage costs the subscribers.
type Steady struct {
	t      testing.TB
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	count  int
	client *redis.Client
}

// PublishSteadily publishes "0", "1", "2", … one every interval, round-robin over channels,
// until Stop (or the end of the test). Its client waits out a stall (a Freeze) instead of
// giving up on a reply, as a backend with generous timeouts does, so every number it counts
// was published exactly once, in order.
func (s *Server) PublishSteadily(t testing.TB, interval time.Duration, channels ...string) *Steady {
	t.Helper()
	p := &Steady{
		t:    t,
		stop: make(chan struct{}),
		client: redis.NewClient(&redis.Options{
			Addr: s.Addr(), ReadTimeout: 2 * waitLimit, WriteTimeout: 2 * waitLimit,
		}),
	}
	p.wg.Add(1)
	go p.run(interval, channels)
	t.Cleanup(func() { p.Stop() })
	return p
}

func (p *Steady) run(interval time.Duration, channels []string) {
	defer p.wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
		err := p.client.Publish(ctx, channels[n%len(channels)], strconv.Itoa(n)).Err()
		cancel()
		if err != nil {
			p.t.Errorf("redistest: PUBLISH %d: %v", n, err)
			return
		}
		p.mu.Lock()
		p.count = n + 1
		p.mu.Unlock()
	}
}

// Published is how many numbers have been published so far.
func (p *Steady) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// Stop ends publishing and returns how many numbers were published ("0" … count-1).
func (p *Steady) Stop() int {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		_ = p.client.Close()
	})
	return p.Published()
}
