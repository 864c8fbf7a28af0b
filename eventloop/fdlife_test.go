//go:build linux

package eventloop

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
)

// A rejected connection's descriptor has one owner at a time and is closed exactly once,
// however its handoff ends: if the number were closed twice, or written after its close,
// whichever connection got the number in between (a concurrent Accept's dup) would receive
// this client's 101, error frame and close 1008, and lose its socket. Each case frees the
// number, has a victim take it at once, and checks the victim is left alone, while the
// rejected client still gets its ErrorMessage and close frame.
func TestRejectClosesItsDescriptorOnce(t *testing.T) {
	cases := []struct {
		name  string
		stage func(t *testing.T, h *harness, s *rejectStage)
	}{
		{"epoll refuses the descriptor", func(t *testing.T, h *harness, s *rejectStage) {
			s.failAdd.Store(true)
		}},
		{"the only shard died", func(t *testing.T, h *harness, s *rejectStage) {
			killShard(t, h, h.engine.loops[0], &s.kill.dead[0])
		}},
		{"the adoption lands behind the shard's stop", func(t *testing.T, h *harness, s *rejectStage) {
			// The shard stalls in a delivery; Close queues its stop, the rejection queues its
			// adoption behind it; then the shard runs both.
			l := h.engine.loops[0]
			s.stall.armed.Store(true)
			h.engine.Deliver(nobody)
			<-s.stall.entered
			go func() { _ = h.engine.Close() }()
			s.afterDial = func() {
				testenv.Eventually(t, 10*time.Second, "the stop and the adoption to be queued", func() bool {
					l.mu.Lock()
					defer l.mu.Unlock()
					return len(l.queue) == 2
				})
				s.stall.unstall()
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &rejectStage{stall: newGate(t), v: newVictim(t)}
			h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, s.faults())
			returned := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.engine.Reject(w, r, "", message.CodeAuthFailed, message.ClosePolicyViolation)
				close(returned)
			}))
			t.Cleanup(srv.Close)
			tc.stage(t, h, s)
			s.armed.Store(true)
			got := make(chan []byte, 1)
			go func() { got <- readAll(t, srv.Listener.Addr().String(), "/reject") }()
			if s.afterDial != nil {
				s.afterDial()
			}
			resp := <-got
			select {
			case <-returned:
			case <-time.After(10 * time.Second):
				t.Fatal("Reject did not return")
			}
			testenv.Eventually(t, 10*time.Second, "the descriptor to be closed", func() bool { return s.closed.Load() })
			if s.v.at < 0 {
				t.Fatal("could not stage the reuse: no descriptor number was free for the victim")
			}
			s.v.check(t, "Reject")
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) || !bytes.Contains(resp, []byte(message.CodeAuthFailed)) ||
				!bytes.HasSuffix(resp, encodeClose(message.ClosePolicyViolation)) {
				t.Errorf("the rejected client got %q, want the 101, the %s ErrorMessage and close 1008", resp, message.CodeAuthFailed)
			}
		})
	}
}

// rejectStage is the fault injection TestRejectClosesItsDescriptorOnce stages with.
type rejectStage struct {
	failAdd   atomic.Bool // the next EPOLL_CTL_ADD fails with ENOSPC
	kill      shardKiller
	armed     atomic.Bool // the next close of a connection descriptor lets the victim take it
	closed    atomic.Bool // that close happened
	stall     *gate
	v         *victim
	afterDial func()
}

func (s *rejectStage) faults() *faults {
	return &faults{
		addConn: func(int) error {
			if s.failAdd.CompareAndSwap(true, false) {
				return unix.ENOSPC
			}
			return nil
		},
		wait: s.kill.wait,
		closedFD: func(fd int) {
			if s.armed.CompareAndSwap(true, false) {
				s.v.take(fd)
				s.closed.Store(true)
			}
		},
		deliver: s.stall.hook,
	}
}

// A goroutine that decided to wake a shard writes its eventfd after letting go of the shard's
// lock. If the shard died (and closed the eventfd) in between and the number went to another
// descriptor (a Redis dial), the wake-up's 8 bytes would land in that socket. The waker here
// is held between its decision and its write until the shard has died and its goroutine
// exited, and a victim takes the lowest free number from the eventfd's up: nothing may reach
// it, and the eventfd must still be closed in the end.
func TestWakeNeverWritesAClosedEventfd(t *testing.T) {
	k, hold := &shardKiller{}, newGate(t)
	f := &faults{wait: k.wait, wake: hold.hook}
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, f)
	l := h.engine.loops[0]
	wfd := l.poll.wfd
	rc := h.dialRaw(t, "u", nil)
	testenv.Eventually(t, 10*time.Second, "the connection's adoption", func() bool { return l.active.Load() == 1 })

	hold.armed.Store(true)
	delivered := make(chan struct{})
	go func() { h.engine.Deliver(nobody); close(delivered) }()
	<-hold.entered
	// The shard dies on its next wait; a ping from the client makes it wait again.
	k.dead[0].Store(true)
	rc.send([]byte{0x89, 0x80, 0, 0, 0, 0})
	closed := make(chan struct{})
	go func() { _ = h.engine.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the shard did not stop")
	}
	v := newVictim(t)
	v.take(wfd)
	hold.unstall()
	<-delivered
	v.check(t, "a shard's wake-up")
	if link, err := readlink(wfd); err == nil && link == "anon_inode:[eventfd]" && v.at != wfd {
		t.Errorf("the eventfd (%d) is still open after the shard stopped and its last waker was done", wfd)
	}
}

// A client that vanishes right after its handshake can be read to EOF and closed by its shard
// while Accept still holds the socket's original descriptor. The shard's epoll registration
// must not outlive its close: the kernel would keep reporting the dead socket under its slot
// and descriptor number, which the next connection may be given both of, and the shard would
// spin reading that connection.
func TestAbortedConnectionLeavesNoEpollRegistration(t *testing.T) {
	hold := newGate(t)
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 1 }, &faults{adoptQueued: hold.at})
	l := h.engine.loops[0]
	hold.armed.Store(true)
	c := h.sendUpgrade(t, "gone")
	<-hold.entered // Accept holds the original descriptor; the adoption is queued
	c.Close()
	h.engine.Deliver(nobody) // the shard takes the adoption, reads EOF and closes its descriptor
	if calls := h.hooks.waitCalls(t, 1, 10*time.Second); calls[0].code != message.CloseAbnormal {
		t.Fatalf("Closed with %d, want 1006", calls[0].code)
	}
	// The hook runs as the connection leaves the registry, just before the shard takes the
	// descriptor out of its epoll set and closes it: wait for the set to shrink.
	var regs []string
	if !testenv.Until(10*time.Second, func() bool {
		regs = epollRegistrations(t, l.poll.epfd)
		return len(regs) == 1 && regs[0] == strconv.Itoa(l.poll.wfd)
	}) {
		t.Fatalf("epoll set holds descriptors %v 10 s after the connection ended, want only the eventfd (%d)", regs, l.poll.wfd)
	}
}
