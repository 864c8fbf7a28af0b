//go:build linux

package eventloop

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
)

// nobody is a delivery no connection receives: it only makes a shard run a delivery task.
var nobody = []registry.Delivery{{Target: registry.Target{Kind: registry.User, ID: "nobody"}, Payload: []byte("x")}}

// victim stands for whatever a concurrent goroutine (an Accept's F_DUPFD_CLOEXEC, a Redis
// dial) gets when it takes a descriptor number the moment the engine freed it: a pipe whose
// write end is duplicated onto that number. Anything the engine still writes to the number
// lands in the pipe; a second close of the number closes the pipe's end.
type victim struct {
	r, w int // the pipe
	at   int // the freed number, now the pipe's write end too; -1 until taken
}

func newVictim(t *testing.T) *victim {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	v := &victim{r: p[0], w: p[1], at: -1}
	t.Cleanup(func() {
		unix.Close(v.r)
		unix.Close(v.w)
		if v.at >= 0 && v.stillOurs() {
			unix.Close(v.at)
		}
	})
	return v
}

// take puts the pipe at the lowest free number from fd up (fd itself when it was just freed).
func (v *victim) take(fd int) {
	n, err := unix.FcntlInt(uintptr(v.w), unix.F_DUPFD_CLOEXEC, fd)
	if err == nil {
		v.at = n
	}
}

// stillOurs reports whether v.at still refers to the pipe (nobody closed it behind our back).
func (v *victim) stillOurs() bool {
	var a, b unix.Stat_t
	return unix.Fstat(v.at, &a) == nil && unix.Fstat(v.w, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev
}

// check fails the test if anything was written into the pipe or its borrowed number closed.
func (v *victim) check(t *testing.T, what string) {
	t.Helper()
	buf := make([]byte, 256)
	if n, _ := unix.Read(v.r, buf); n > 0 {
		t.Errorf("%s wrote %d bytes into a descriptor it no longer owned: %q", what, n, buf[:n])
	}
	if v.at >= 0 && !v.stillOurs() {
		t.Errorf("%s closed descriptor %d a second time, after it had been reused", what, v.at)
	}
}

// upgradeRequest is a valid WebSocket upgrade request for path.
func upgradeRequest(addr, path string) []byte {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	return fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", path, addr, base64.StdEncoding.EncodeToString(key))
}

// readAll sends an upgrade request for path and returns everything the server sends until it
// closes the connection.
func readAll(t *testing.T, addr, path string) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(upgradeRequest(addr, path)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within 10 s (got %q)", got)
	}
	return got
}

// gate holds the first goroutine that reaches its hook once armed (a shard in a delivery, an
// Accept before its 101, a waker before its write) until unstall; entered says it is held.
type gate struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *gate) hook(int) {
	if s.armed.CompareAndSwap(true, false) {
		s.entered <- struct{}{}
		<-s.release
	}
}

func (s *gate) unstall() { s.once.Do(func() { close(s.release) }) }

// at is hook for hooks without a shard argument.
func (s *gate) at() { s.hook(0) }

// newGate is a gate released at the end of the test at the latest.
func newGate(t *testing.T) *gate {
	g := &gate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(g.unstall)
	return g
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// killShard makes l's next wait fail (the shard dies) and waits until it has stopped.
func killShard(t *testing.T, h *harness, l *loop, dead *atomic.Bool) {
	t.Helper()
	dead.Store(true)
	h.engine.Deliver(nobody) // wakes it, so it waits again
	waitFor(t, fmt.Sprintf("shard %d to stop", l.id), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.stopped
	})
}

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
			killShard(t, h, h.engine.loops[0], &s.dead)
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
				waitFor(t, "the stop and the adoption to be queued", func() bool {
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
			waitFor(t, "the descriptor to be closed", func() bool { return s.closed.Load() })
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
	dead      atomic.Bool // the next wait fails
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
		wait: func(int) error {
			if s.dead.Load() {
				return errors.New("injected epoll_wait failure")
			}
			return nil
		},
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
	waitFor(t, "the connection's adoption", func() bool { return l.active.Load() == 1 })

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

// readlink is where /proc/self/fd/fd points.
func readlink(fd int) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// shardKiller makes the chosen shards' waits fail on demand.
type shardKiller struct{ dead [4]atomic.Bool }

func (k *shardKiller) wait(shard int) error {
	if k.dead[shard].Load() {
		return fmt.Errorf("injected epoll_wait failure on shard %d", shard)
	}
	return nil
}

// A shard whose epoll wait fails closes its connections and stops. Placement must skip it
// (it has no connections, so it would look the least loaded and swallow every upgrade), and
// the node must say it is degraded: Ready (so /readyz) and eventloop_shards_failed.
func TestFailedShardIsSkippedAndReported(t *testing.T) {
	k := &shardKiller{}
	h := newFaultyHarness(t, func(o *session.Options) { o.Shards = 2 }, &faults{wait: k.wait})
	first := h.dialRaw(t, "first", nil) // ties go to shard 0
	l0 := h.engine.loops[0]
	waitFor(t, "the first connection on shard 0", func() bool { return l0.active.Load() == 1 })
	k.dead[0].Store(true)
	first.send([]byte{0x89, 0x80, 0, 0, 0, 0}) // wakes shard 0, whose next wait fails
	if code, _ := first.expectClose(10 * time.Second); code != message.CloseGoingAway {
		t.Fatalf("the failed shard's connection got close %d, want 1001", code)
	}
	waitFor(t, "shard 0 to stop", func() bool {
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
	waitFor(t, "the shard to stop polling after the adoption", func() bool { return !l.polling.Load() })

	hold.armed.Store(true)
	b, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Write(upgradeRequest(h.addr, "/ws?token="+h.token(t, "b", nil, time.Hour))); err != nil {
		t.Fatal(err)
	}
	<-hold.entered
	h.engine.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.User, ID: "a"}, Payload: []byte("now")}})
	if op, payload := a.expectFrame(10 * time.Second); op != opText || string(payload) != "now" {
		t.Fatalf("a got op %d %q, want the delivery", op, payload)
	}
}

// epollRegistrations lists the descriptor numbers registered in the epoll set epfd.
func epollRegistrations(t *testing.T, epfd int) []string {
	t.Helper()
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for line := range strings.Lines(string(info)) {
		if rest, ok := strings.CutPrefix(line, "tfd:"); ok {
			fds = append(fds, strings.Fields(rest)[0])
		}
	}
	return fds
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
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(upgradeRequest(h.addr, "/ws?token="+h.token(t, "gone", nil, time.Hour))); err != nil {
		t.Fatal(err)
	}
	<-hold.entered // Accept holds the original descriptor; the adoption is queued
	c.Close()
	h.engine.Deliver(nobody) // the shard takes the adoption, reads EOF and closes its descriptor
	if calls := h.hooks.waitCalls(t, 1, 10*time.Second); calls[0].code != message.CloseAbnormal {
		t.Fatalf("Closed with %d, want 1006", calls[0].code)
	}
	if regs := epollRegistrations(t, l.poll.epfd); len(regs) != 1 || regs[0] != strconv.Itoa(l.poll.wfd) {
		t.Fatalf("epoll set holds descriptors %v after the connection ended, want only the eventfd (%d)", regs, l.poll.wfd)
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
	rcs := make(chan *rawClient, 1)
	go func() { rcs <- h.dialRaw(t, "late", nil) }()
	<-hold.entered
	h.engine.Deliver(nobody) // the shard takes the adoption: the connection is held
	waitFor(t, "the adoption", func() bool { return l.active.Load() == 1 })
	closed := make(chan struct{})
	go func() { _ = h.engine.Close(); close(closed) }()
	waitFor(t, "the shard to take its stop", func() bool { return l.down.Load() })
	hold.unstall()
	rc := <-rcs
	if code, _ := rc.expectClose(10 * time.Second); code != message.CloseGoingAway {
		t.Fatalf("close %d, want 1001", code)
	}
	rc.expectEOF(10 * time.Second)
	<-closed
}
