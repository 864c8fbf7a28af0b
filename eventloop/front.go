//go:build linux

package eventloop

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Front owns the service's listening socket while the epoll engine serves: one goroutine
// accepts connections and reads each one's first request head itself, so an upgrade reaches
// admission without net/http's per-connection goroutine, buffers, connection state and
// netpoller registration, and without a hijack (the descriptor is still duplicated, so that
// the 101 can never be written to a reused number: frontWriter.dup). Every other
// request (health, metrics, publish, another path), and any request it does not fully
// understand (parseHead), goes to net/http with its bytes replayed: Front is the net.Listener
// the HTTP server serves, so net/http keeps every answer it gives today.
//
// The rules of net/http's reading stay: a head not complete readHeaderTimeout after the
// accept is closed without an answer, as net/http closes it; a head longer than net/http
// would read goes to net/http, which answers 431.
//
// One difference remains: net/http cancels a request's context when its client goes away,
// the front does not (nothing reads the socket during admission), so an upgrade whose client
// left while admission waited for the backplane ends at the subscribe timeout or at the
// 101's write instead of at once.
//
// Ownership: the loop goroutine owns the listening descriptor, its poller and every
// connection whose head is still arriving (reading); a connection whose upgrade head is
// complete belongs to its admission goroutine (frontWriter), which hands it to a shard
// (Accept, Reject) or to net/http; a connection handed to net/http is net/http's.
type Front struct {
	e       *Engine
	ln      net.Listener // the service's; Close closes it
	lfd     int          // a duplicate of ln's descriptor, which the loop accepts on
	poll    *poller
	path    string
	upgrade http.Handler
	timeout time.Duration // a head must be complete this long after the accept
	maxHead int           // a longer head goes to net/http

	mu        sync.Mutex
	toHTTP    []net.Conn    // connections for net/http, through Accept; nil once closed
	closed    bool          // Close was called: a connection for net/http is closed instead
	handed    chan struct{} // a connection joined toHTTP (capacity 1)
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when the loop has exited
	failed    error         // why the loop exited, when not by Close; set before done
	closeOnce sync.Once

	// The loop goroutine's alone.
	slots  []*reading // by epoll slot: connections waiting for more of their head
	free   []int32
	order  []*reading // in accept order, so in deadline order (one timeout for all)
	first  int        // order[first] is the oldest still listed
	buf    []byte
	events []unix.EpollEvent
	paused time.Time // accepting resumes then (after EMFILE and the like); zero: accepting
}

// reading is a connection whose request head is still arriving.
type reading struct {
	fd       int
	slot     int32 // -1 until it waits in epoll
	deadline time.Time
	peer     unix.Sockaddr
	head     []byte // what arrived so far, when one read was not enough
	gone     bool   // it left the front (handed on, or closed)
}

// listenSlot marks the listening socket's epoll registration.
const listenSlot = -2

// Linux copies these options from a listening socket to every socket it accepts, so the
// front sets them once instead of per connection: TCP_NODELAY (every engine write is a whole
// frame) and net/http's default keep-alive probing (15 s idle, 15 s apart, 9 probes).
var inheritedOptions = [...]struct{ level, opt, value int }{
	{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
}

// Front starts serving ln's connections as Front describes and returns the listener net/http
// is to serve instead of ln. upgrade is the handler of a WebSocket upgrade at path (server's
// admission); it gets the request as net/http would have built it and a ResponseWriter that
// Accept and Reject recognise. headerTimeout and maxHeaderBytes are net/http's
// ReadHeaderTimeout and MaxHeaderBytes.
func (e *Engine) Front(ln net.Listener, path string, upgrade http.Handler, headerTimeout time.Duration, maxHeaderBytes int) (net.Listener, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("front: %T has no file descriptor", ln)
	}
	lfd, err := dupFD(sc)
	if err != nil {
		return nil, fmt.Errorf("front: %w", err)
	}
	for _, o := range inheritedOptions {
		if err := unix.SetsockoptInt(lfd, o.level, o.opt, o.value); err != nil {
			unix.Close(lfd)
			return nil, fmt.Errorf("front: listening socket option %d/%d: %w", o.level, o.opt, err)
		}
	}
	p, err := newPoller()
	if err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("front: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: listenSlot, Pad: int32(lfd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		p.close()
		unix.Close(lfd)
		return nil, fmt.Errorf("front: register listening socket: %w", err)
	}
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if headerTimeout <= 0 { // as net/http: no limit
		headerTimeout = math.MaxInt64
	}
	f := &Front{
		e: e, ln: ln, lfd: lfd, poll: p, path: path, upgrade: upgrade,
		timeout: headerTimeout,
		// net/http reads a head of up to MaxHeaderBytes plus 4096 bytes of slack.
		maxHead: maxHeaderBytes + 4096,
		handed:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		buf:     make([]byte, 16<<10),
		events:  make([]unix.EpollEvent, 128),
	}
	go f.run()
	return f, nil
}

// Addr is the listening address.
func (f *Front) Addr() net.Addr { return f.ln.Addr() }

// Close stops accepting: the loop closes the connections whose heads are still arriving,
// and the listening socket closes. Admissions under way finish on their own goroutines.
func (f *Front) Close() error {
	var err error
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		waiting := f.toHTTP
		f.toHTTP = nil
		f.mu.Unlock()
		for _, c := range waiting { // handed on but never accepted
			c.Close()
		}
		close(f.stop)
		_ = f.poll.wake()
		<-f.done
		err = errors.Join(f.poll.close(), f.ln.Close())
	})
	return err
}

// run is the loop goroutine.
func (f *Front) run() {
	defer close(f.done)
	defer f.shutdown()
	for {
		n, err := f.poll.wait(f.events, f.deadline())
		if err != nil {
			f.failed = err
			f.e.log.Error("front: wait failed; no more connections are accepted", "err", err)
			return
		}
		select {
		case <-f.stop:
			return
		default:
		}
		now := time.Now()
		for i := range f.events[:n] {
			ev := &f.events[i]
			switch ev.Fd {
			case wakeSlot:
				f.poll.consumeWake()
			case listenSlot:
				f.acceptAll(now)
			default:
				f.onReadable(ev)
			}
		}
		f.expire(now)
		if !f.paused.IsZero() && !now.Before(f.paused) {
			f.resumeAccepting()
		}
	}
}

// deadline is the next moment the loop must look at its clock: the oldest head's timeout,
// or the end of a pause in accepting.
func (f *Front) deadline() time.Time {
	var at time.Time
	if f.first < len(f.order) {
		at = f.order[f.first].deadline
	}
	if !f.paused.IsZero() && (at.IsZero() || f.paused.Before(at)) {
		at = f.paused
	}
	return at
}

// acceptAll accepts what the backlog holds, up to a batch, and reads each connection's head
// at once: a client sends its request right behind its connect, so it has often arrived.
func (f *Front) acceptAll(now time.Time) {
	for range 256 {
		fd, sa, err := unix.Accept4(f.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
			continue
		default:
			// Out of descriptors or memory: net/http sleeps and retries, so does the front
			// (the listening socket stays readable, so it must leave the set meanwhile).
			f.e.log.Warn("front: accept failed; retrying in 10ms", "err", err)
			f.pauseAccepting(now.Add(10 * time.Millisecond))
			return
		}
		rd := &reading{fd: fd, slot: -1, deadline: now.Add(f.timeout), peer: sa}
		f.order = append(f.order, rd)
		f.read(rd)
	}
}

func (f *Front) pauseAccepting(until time.Time) {
	ev := unix.EpollEvent{Events: 0, Fd: listenSlot, Pad: int32(f.lfd)}
	_ = unix.EpollCtl(f.poll.epfd, unix.EPOLL_CTL_MOD, f.lfd, &ev)
	f.paused = until
}

func (f *Front) resumeAccepting() {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: listenSlot, Pad: int32(f.lfd)}
	_ = unix.EpollCtl(f.poll.epfd, unix.EPOLL_CTL_MOD, f.lfd, &ev)
	f.paused = time.Time{}
}

// onReadable reads more of a waiting connection's head.
func (f *Front) onReadable(ev *unix.EpollEvent) {
	if ev.Fd < 0 || int(ev.Fd) >= len(f.slots) {
		return
	}
	rd := f.slots[ev.Fd]
	if rd == nil || int32(rd.fd) != ev.Pad {
		return
	}
	f.read(rd)
}

// read takes what has arrived of rd's head and, once it is complete, hands the connection
// on: an upgrade it understands to admission on a goroutine of its own (admission waits for
// the backplane), anything else to net/http.
func (f *Front) read(rd *reading) {
	n, err := unix.Read(rd.fd, f.buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		f.wait(rd)
		return
	case errors.Is(err, unix.EINTR):
		f.wait(rd)
		return
	case err != nil || n == 0: // reset, or closed before its head was complete
		f.drop(rd)
		return
	}
	data, seen := f.buf[:n], 0
	if rd.head != nil {
		seen = len(rd.head)
		rd.head = append(rd.head, data...)
		data = rd.head
	}
	end := headEnd(data, seen)
	switch {
	case end > f.maxHead || end < 0 && len(data) > f.maxHead:
		f.toNetHTTP(rd, data) // net/http answers 431
	case end < 0:
		if rd.head == nil {
			rd.head = append(make([]byte, 0, 2*len(data)), data...)
		}
		f.wait(rd)
	default:
		// The request's context (Background) is never cancelled: as net/http's Shutdown,
		// Close lets admissions under way finish (the engine refuses them once it drains).
		r, ok := parseHead(data[:end], f.path)
		if !ok {
			f.toNetHTTP(rd, data)
			return
		}
		r.RemoteAddr = remoteAddr(rd.peer)
		w := &frontWriter{fd: rd.fd}
		if len(data) > end {
			w.pending = append([]byte(nil), data[end:]...)
		}
		f.leave(rd)
		go f.admit(w, r)
	}
}

// wait has the loop read rd again when more bytes arrive. The registration is one-shot: it
// goes quiet once reported, so a connection that leaves the front needs no EPOLL_CTL_DEL
// (the descriptor's close, or net/http's and a shard's duplicates, never see this set).
func (f *Front) wait(rd *reading) {
	op := unix.EPOLL_CTL_MOD
	if rd.slot < 0 {
		op = unix.EPOLL_CTL_ADD
		if n := len(f.free); n > 0 {
			rd.slot, f.free = f.free[n-1], f.free[:n-1]
		} else {
			rd.slot = int32(len(f.slots))
			f.slots = append(f.slots, nil)
		}
		f.slots[rd.slot] = rd
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: rd.slot, Pad: int32(rd.fd)}
	if err := unix.EpollCtl(f.poll.epfd, op, rd.fd, &ev); err != nil {
		f.e.log.Warn("front: cannot wait for a request", "fd", rd.fd, "err", err)
		f.drop(rd)
	}
}

// leave takes rd out of the front's books; its descriptor is now someone else's. rd itself
// stays listed in order until the entries before it expire or leave, so it lets go of its
// buffer now.
func (f *Front) leave(rd *reading) {
	rd.gone = true
	rd.head, rd.peer = nil, nil
	if rd.slot >= 0 {
		f.slots[rd.slot] = nil
		f.free = append(f.free, rd.slot)
	}
}

// drop closes a connection whose head will not be served.
func (f *Front) drop(rd *reading) {
	f.leave(rd)
	_ = unix.Close(rd.fd)
}

// expire closes the connections whose heads are late (slowloris), oldest first, and forgets
// those that left.
func (f *Front) expire(now time.Time) {
	for f.first < len(f.order) {
		rd := f.order[f.first]
		if !rd.gone {
			if now.Before(rd.deadline) {
				break
			}
			f.drop(rd)
		}
		f.order[f.first] = nil
		f.first++
	}
	if f.first == len(f.order) {
		f.order, f.first = f.order[:0], 0
	} else if f.first > 1024 && f.first > len(f.order)/2 {
		f.order = f.order[:copy(f.order, f.order[f.first:])]
		f.first = 0
	}
}

// shutdown closes what the loop owns once it stops: the heads still arriving and its
// duplicate of the listening socket.
func (f *Front) shutdown() {
	for _, rd := range f.order[f.first:] {
		if !rd.gone {
			f.drop(rd)
		}
	}
	f.order, f.first = nil, 0
	_ = unix.Close(f.lfd)
}
