//go:build linux

package eventloop

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// benchLoop is a loop that is never run: benchmarks (and a few tests) drive its methods
// directly, as its goroutine would.
func benchLoop(b testing.TB) *loop {
	b.Helper()
	e := &Engine{
		opts:    session.Options{MaxMessageSize: 65536, SendQueueLimit: 1 << 30, Policy: session.NewPolicy(nil)},
		hooks:   noHooks{},
		metrics: telemetry.New(),
		log:     slog.New(slog.DiscardHandler),
		faults:  &faults{},
	}
	l, err := newLoop(0, e, 10*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.poll.close() })
	return l
}

// addConn puts a connection on fd into the loop's table and registry.
func (l *loop) addTestConn(fd int, user string, groups []string) *conn {
	slot := l.allocSlot()
	c := &conn{fd: int32(fd), slot: slot, qhead: -1, qtail: -1, id: session.Identity{User: user, Groups: groups}}
	c.timer.clear()
	c.flags |= flagRegistered
	l.conns[slot] = c
	l.reg.Add(c, user, groups)
	return c
}

// forgetQueued empties every dirty connection's queue without writing it.
func (l *loop) forgetQueued() {
	for i, c := range l.dirty {
		c.qhead, c.qtail, c.queued = -1, -1, 0
		c.flags &^= flagDirty
		l.dirty[i] = nil
	}
	l.dirty = l.dirty[:0]
	clear(l.refs)
	l.refs = l.refs[:0]
}

// BenchmarkFanOutEnqueue measures queueing one broadcast to 10,000 connections of a shard:
// one frame encoding, then one arena entry per target. The allocations per op stay at the
// frame itself however many targets there are.
//
// The v2 runs are the same fan-out to notifications.v2 connections (live, past their resume):
// the v2 frame is built once per delivery too, so they cost what v1 costs plus that one frame.
func BenchmarkFanOutEnqueue(b *testing.B) {
	for _, proto := range []string{"v1", "v2"} {
		for _, size := range []int{128, 4096} {
			b.Run(fmt.Sprintf("%s-10000-conns-%dB", proto, size), func(b *testing.B) {
				benchFanOut(b, proto == "v2", size)
			})
		}
	}
}

func benchFanOut(b *testing.B, v2 bool, size int) {
	{
		{
			l := benchLoop(b)
			const n = 10000
			for i := range n {
				c := l.addTestConn(-1, fmt.Sprintf("u%d", i), []string{"g"})
				if v2 {
					c.flags |= flagV2
				}
			}
			payload := append([]byte(`{"p":"`), append(bytes.Repeat([]byte("p"), size-8), '"', '}')...)
			pos := history.Position{Epoch: 1, Seq: 1, Tag: 1}
			batch := []registry.Delivery{{Target: registry.Target{Kind: registry.Group, ID: "g"}, Payload: payload, Position: pos}}
			l.deliver(batch) // grow the arena once
			l.forgetQueued()
			b.ReportAllocs()
			for b.Loop() {
				l.deliver(batch)
				l.forgetQueued()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/target")
		}
	}
}

// BenchmarkFanOutToUsers measures queueing a batch of 1,000 messages to 1,000 users, one
// connection each, among 10,000 on the shard (the per-user audience: one registry lookup per
// delivery).
func BenchmarkFanOutToUsers(b *testing.B) {
	l := benchLoop(b)
	const n, m = 10000, 1000
	for i := range n {
		l.addTestConn(-1, fmt.Sprintf("u%d", i), nil)
	}
	batch := make([]registry.Delivery, m)
	for i := range batch {
		batch[i] = registry.Delivery{Target: registry.Target{Kind: registry.User, ID: fmt.Sprintf("u%d", i*n/m)}, Payload: []byte("payload")}
	}
	l.deliver(batch)
	l.forgetQueued()
	b.ReportAllocs()
	for b.Loop() {
		l.deliver(batch)
		l.forgetQueued()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*m), "ns/delivery")
}

// BenchmarkWritevFlush measures flushing one connection's queue of 64 frames with writev into
// a socket pair drained by another goroutine.
func BenchmarkWritevFlush(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("64-frames-%dB", size), func(b *testing.B) {
			l := benchLoop(b)
			sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			_ = unix.SetsockoptInt(sv[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
			if err := unix.SetNonblock(sv[0], true); err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				buf := make([]byte, 1<<20)
				for {
					if n, err := unix.Read(sv[1], buf); n <= 0 || err != nil {
						return
					}
				}
			}()
			c := l.addTestConn(sv[0], "w", nil)
			if err := l.poll.add(sv[0], c.slot); err != nil {
				b.Fatal(err)
			}
			frame := encodeFrame(opText, bytes.Repeat([]byte("f"), size))
			b.SetBytes(int64(64 * len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				for range 64 {
					l.push(c, frame)
				}
				l.flushDirty()
				if c.state == stateClosed {
					b.Fatal("connection broke")
				}
			}
			l.finish(c)
			unix.Close(sv[1])
			<-drained
		})
	}
}

// BenchmarkDeliverBroadcastToSockets measures Deliver end to end: one broadcast through the
// shards' queues, encoded once per shard and written to n real sockets (socket pairs adopted
// by the engine as if upgraded), until every peer has read its frame.
func BenchmarkDeliverBroadcastToSockets(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("%d-conns", n), func(b *testing.B) {
			raiseFDLimitB(b, 2*n+100)
			e, err := New(session.Options{Shards: 2, Policy: session.NewPolicy(nil), Metrics: telemetry.New()})
			if err != nil {
				b.Fatal(err)
			}
			peers := make([]int, 0, n)
			for range n {
				sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
				if err != nil {
					b.Fatal(err)
				}
				h := &handoff{fd: sv[0], adm: session.Admission{Identity: session.Identity{User: "u"}}}
				l := e.handOff(h)
				if l == nil {
					b.Fatal("no shard took the connection")
				}
				l.submit(task{kind: taskSent, h: h}) // as Accept does once the 101 is out

				peers = append(peers, sv[1])
			}
			r := newPeerReader(b, peers)
			payload := bytes.Repeat([]byte("m"), 128)
			frame := len(encodeFrame(opText, payload))
			b.ReportAllocs()
			for b.Loop() {
				e.Deliver([]registry.Delivery{{Target: registry.Target{Kind: registry.Broadcast}, Payload: payload}})
				r.await(b, n*frame)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/target")
			_ = e.Close()
			r.close()
		})
	}
}

// peerReader drains the client ends of socket pairs with its own epoll instance and reports
// how many bytes arrived.
type peerReader struct {
	epfd  int
	peers []int
	got   chan int
	stop  chan struct{}
	done  chan struct{}
}

func newPeerReader(b *testing.B, peers []int) *peerReader {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	for _, fd := range peers {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			b.Fatal(err)
		}
	}
	r := &peerReader{epfd: epfd, peers: peers, got: make(chan int, 1024), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *peerReader) run() {
	defer close(r.done)
	events := make([]unix.EpollEvent, 512)
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		n, _ := unix.EpollWait(r.epfd, events, 10)
		total := 0
		for _, ev := range events[:max(n, 0)] {
			if m, _ := unix.Read(int(ev.Fd), buf); m > 0 {
				total += m
			}
		}
		if total > 0 {
			r.got <- total
		}
	}
}

// await waits for want bytes; one timer per call, not one per chunk, so -benchmem counts
// the engine's allocations rather than the reader's.
func (r *peerReader) await(b *testing.B, want int) {
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for want > 0 {
		select {
		case n := <-r.got:
			want -= n
		case <-timeout.C:
			b.Fatalf("peers still missing %d bytes", want)
		}
	}
}

func (r *peerReader) close() {
	close(r.stop)
	<-r.done
	for _, fd := range r.peers {
		unix.Close(fd)
	}
	unix.Close(r.epfd)
}

func raiseFDLimitB(b *testing.B, need int) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Max < uint64(need) {
		b.Skipf("needs %d descriptors, hard limit is %d", need, lim.Max)
	}
	lim.Cur = lim.Max
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}
