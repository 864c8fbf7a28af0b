package backplane

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// watchLog is a Watcher that records messages and subscription changes in the order they
// arrive, as one log.
type watchLog struct {
	collector
	mu  sync.Mutex
	log []string
}

func (w *watchLog) Deliver(batch []Message) {
	w.mu.Lock()
	for _, m := range batch {
		w.log = append(w.log, "msg "+string(m.Payload))
	}
	w.mu.Unlock()
	w.collector.Deliver(batch)
}

func (w *watchLog) Subscriptions(changes []Subscription) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range changes {
		w.log = append(w.log, fmt.Sprintf("%s %d", c.Channel, c.Change))
	}
}

func (w *watchLog) entries() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.log...)
}

func (w *watchLog) has(entry string) bool {
	for _, e := range w.entries() {
		if e == entry {
			return true
		}
	}
	return false
}

// TestResubscriptionAfterAKilledConnectionIsReportedResumed: a Watcher learns that a channel
// started, and, once the Pub/Sub connection Redis killed is back and the subscription is
// confirmed again, that it resumed; a message published after that arrives after the report.
func TestResubscriptionAfterAKilledConnectionIsReportedResumed(t *testing.T) {
	srv := redistest.Start(t)
	w := &watchLog{collector: *newCollector()}
	bp := startRedis(t, RedisOptions{URL: srv.URL(), PubSubConns: 1}, w)
	ctx := context.Background()
	if err := bp.Subscribe(ctx, []string{"ws:a"}); err != nil {
		t.Fatal(err)
	}
	started, resumed := fmt.Sprintf("ws:a %d", Started), fmt.Sprintf("ws:a %d", Resumed)
	testenv.Eventually(t, 10*time.Second, "started reported", func() bool { return w.has(started) })

	client := srv.Client(t)
	if err := client.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "resumed reported", func() bool { return w.has(resumed) })
	if err := bp.Publish(ctx, "ws:a", []byte("after")); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 1, 10*time.Second)
	if got, want := fmt.Sprint(w.entries()), fmt.Sprintf("[%s %s msg after]", started, resumed); got != want {
		t.Errorf("reports %s, want %s", got, want)
	}

	bp.Unsubscribe([]string{"ws:a"})
	stopped := fmt.Sprintf("ws:a %d", Stopped)
	testenv.Eventually(t, 10*time.Second, "stopped reported", func() bool { return w.has(stopped) })
}

// TestChannelMovedToAnotherMasterIsReportedResumed: a slot migration moves a channel's
// subscription to its new master; what was published there before the new subscription was
// confirmed is missed, so the Watcher learns that the channel resumed (not that it stopped
// and started afresh).
func TestChannelMovedToAnotherMasterIsReportedResumed(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	w := &watchLog{collector: *newCollector()}
	r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true}, w)
	const ch = "ws:migrating"
	if err := r.Subscribe(ctx, []string{ch}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "started reported", func() bool { return w.has(fmt.Sprintf("%s %d", ch, Started)) })
	m := openMasters(t, cl)
	m.migrate(t, ch)
	testenv.Eventually(t, 10*time.Second, "resumed reported", func() bool { return w.has(fmt.Sprintf("%s %d", ch, Resumed)) })
	if w.has(fmt.Sprintf("%s %d", ch, Stopped)) {
		t.Errorf("the moved channel was reported stopped: %v", w.entries())
	}
}
