//go:build linux

package eventloop

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/registry"
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

// sendUpgrade sends user's upgrade request on a new connection without waiting for the
// answer (the test holds Accept meanwhile); the connection is closed at the end of the test.
func (h *harness) sendUpgrade(t *testing.T, user string) *wsraw.Conn {
	t.Helper()
	c, err := wsraw.Connect(h.addr, wsraw.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SendRequest("/ws?token=" + h.token(t, user, nil, time.Hour)); err != nil {
		t.Fatal(err)
	}
	return c
}

// readAll sends an upgrade request for path and returns everything the server sends until it
// closes the connection.
func readAll(t *testing.T, addr, path string) []byte {
	t.Helper()
	c, err := wsraw.Connect(addr, wsraw.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendRequest(path); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
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

// killShard makes l's next wait fail (the shard dies) and waits until it has stopped.
func killShard(t *testing.T, h *harness, l *loop, dead *atomic.Bool) {
	t.Helper()
	dead.Store(true)
	h.engine.Deliver(nobody) // wakes it, so it waits again
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("shard %d to stop", l.id), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.stopped
	})
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
