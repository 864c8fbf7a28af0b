package history

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
)

// A reader that arrives while a read is under way must not be answered by it: that read may
// predate the reader's subscription. It joins the next read, shared with everyone else who
// arrived meanwhile.
func TestCoalescerNeverAnswersWithAReadThatStartedEarlier(t *testing.T) {
	var version atomic.Int64 // what the store holds; a read returns it as the top position
	var fetches atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	c := newCoalescer(8, time.Minute, func(ctx context.Context, _ string, _ need) (snapshot, error) {
		fetches.Add(1)
		v := version.Load()
		started <- struct{}{}
		<-release
		return snapshot{top: Position{Epoch: 1, Seq: uint64(v)}}, nil
	})
	ctx := context.Background()
	first := make(chan snapshot)
	go func() {
		s, _ := c.read(ctx, "ch", Position{}, 10)
		first <- s
	}()
	<-started
	version.Store(1) // published after the first read began
	var wg sync.WaitGroup
	late := make([]snapshot, 50)
	for i := range late {
		wg.Add(1)
		go func() {
			defer wg.Done()
			late[i], _ = c.read(ctx, "ch", Position{}, 10)
		}()
	}
	// Wait until every late reader has joined the next read.
	testenv.Eventually(t, 10*time.Second, "the late readers joined the next read", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		p := c.streams["ch"]
		return p != nil && p.next != nil && p.next.readers == len(late)
	})
	close(release)
	if s := <-first; s.top.Seq != 0 {
		t.Fatalf("first reader saw %d", s.top.Seq)
	}
	wg.Wait()
	for i, s := range late {
		if s.top.Seq != 1 {
			t.Fatalf("late reader %d got a read that started before it asked (version %d)", i, s.top.Seq)
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches for 51 readers", n)
	}
}

// waiting counts the readers of channel gathered for the read after the one under way.
func (c *coalescer) waiting(channel string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.streams[channel]; p != nil && p.next != nil {
		return p.next.readers
	}
	return 0
}
