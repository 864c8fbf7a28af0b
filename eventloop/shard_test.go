//go:build linux

package eventloop

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// A shard whose epoll wait fails closes its connections and stops. Placement must skip it
// (it has no connections, so it would look the least loaded and swallow every upgrade), and
// the node must say it is degraded: Ready (so /readyz), eventloop_shards_failed and one error
// log record naming the shard and the cause.
func TestFailedShardIsSkippedAndReported(t *testing.T) {
	k := &shardKiller{}
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 2 }, &faults{wait: k.wait})
	first := h.dialRaw(t, "first", nil) // ties go to shard 0
	l0 := h.engine.loops[0]
	testenv.Eventually(t, 10*time.Second, "the first connection on shard 0", func() bool { return l0.active.Load() == 1 })
	k.dead[0].Store(true)
	first.send([]byte{0x89, 0x80, 0, 0, 0, 0}) // wakes shard 0, whose next wait fails
	if code, _ := first.expectClose(10 * time.Second); code != message.CloseGoingAway {
		t.Fatalf("the failed shard's connection got close %d, want 1001", code)
	}
	testenv.Eventually(t, 10*time.Second, "shard 0 to stop", func() bool {
		l0.mu.Lock()
		defer l0.mu.Unlock()
		return l0.stopped
	})

	for i := range 4 {
		user := fmt.Sprintf("later%d", i)
		rc := h.dialRaw(t, user, nil) // fails the test unless the upgrade gets its 101
		h.engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.User, ID: user}, Payload: []byte("hi " + user)}})
		if op, payload := rc.expectFrame(10 * time.Second); op != opText || string(payload) != "hi "+user {
			t.Fatalf("%s got op %d %q, want its message", user, op, payload)
		}
	}
	if err := h.engine.Ready(); err == nil || !strings.Contains(err.Error(), "shard 0 failed") {
		t.Errorf("Ready() = %v, want the failure of shard 0", err)
	}
	var metrics strings.Builder
	h.metrics.WritePrometheus(&metrics)
	if !strings.Contains(metrics.String(), "\neventloop_shards_failed 1\n") {
		t.Errorf("eventloop_shards_failed is not 1:\n%s", metrics.String())
	}
	var failed []logRecord
	for _, r := range h.logs.records() {
		if r.level >= slog.LevelError {
			failed = append(failed, r)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0].msg, "event loop failed") ||
		failed[0].attrs["shard"].String() != "0" ||
		!strings.Contains(failed[0].attrs["err"].String(), "shard 0 failed: injected epoll_wait failure on shard 0") {
		t.Errorf("error log records %v, want one: event loop failed, with shard 0 and the wait's error", failed)
	}
}

// With every shard failed an upgrade is refused with a plain 503 before anything is hijacked,
// not a bare TCP close.
func TestNoRunningShardRefusesUpgradeWith503(t *testing.T) {
	k := &shardKiller{}
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, &faults{wait: k.wait})
	killShard(t, h, h.engine.loops[0], &k.dead[0])
	rc := dialRaw(t, h.addr, "/ws?token="+h.token(t, "u", nil, time.Hour), nil, nil)
	if rc.resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rc.resp.StatusCode)
	}
	if err := <-h.accepts; !errors.Is(err, errNoShard) {
		t.Fatalf("Accept returned %v, want errNoShard", err)
	}
}

// An Accept queues its adoption and wakes the shard only after writing the 101. A delivery
// queued meanwhile for another connection of the shard must wake the shard itself, not wait
// until the HTTP goroutine is scheduled again (here: held before its 101 write).
func TestDeliveryDoesNotWaitForAnAcceptInProgress(t *testing.T) {
	hold := newGate(t)
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, &faults{adoptQueued: hold.at})
	l := h.engine.loops[0]
	a := h.dialRaw(t, "a", nil)
	testenv.Eventually(t, 10*time.Second, "the shard to stop polling after the adoption", func() bool { return !l.polling.Load() })

	hold.armed.Store(true)
	h.sendUpgrade(t, "b")
	<-hold.entered
	h.engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.User, ID: "a"}, Payload: []byte("now")}})
	if op, payload := a.expectFrame(10 * time.Second); op != opText || string(payload) != "now" {
		t.Fatalf("a got op %d %q, want the delivery", op, payload)
	}
}

// Close may reach a shard between an Accept's adoption and its 101: the shard holds the
// connection (it may write nothing before the 101), so it must wait for the 101 before it
// writes the close frame, and the client sees 101, then close 1001, then EOF.
func TestCloseDuringAnAcceptStillSendsTheCloseFrame(t *testing.T) {
	hold := newGate(t)
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, &faults{adoptQueued: hold.at})
	l := h.engine.loops[0]
	hold.armed.Store(true)
	conn := h.sendUpgrade(t, "late")
	<-hold.entered
	h.engine.Deliver(nobody) // the shard takes the adoption: the connection is held
	testenv.Eventually(t, 10*time.Second, "the adoption", func() bool { return l.active.Load() == 1 })
	closed := make(chan struct{})
	go func() { _ = h.engine.Close(); close(closed) }()
	testenv.Eventually(t, 10*time.Second, "the shard to take its stop", func() bool { return l.down.Load() })
	hold.unstall()
	rc := &rawClient{t: t, conn: conn}
	var err error
	if rc.resp, err = conn.ReadResponse(); err != nil || rc.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade response %v, %v: want 101", rc.resp, err)
	}
	if code, _ := rc.expectClose(10 * time.Second); code != message.CloseGoingAway {
		t.Fatalf("close %d, want 1001", code)
	}
	rc.expectEOF(10 * time.Second)
	<-closed
}
