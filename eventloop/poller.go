//go:build linux

package eventloop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// wakeSlot marks the eventfd's epoll registration; connection registrations carry their
// shard slot (≥ 0).
const wakeSlot = -1

// poller is one shard's epoll instance plus the eventfd other goroutines use to wake it. Every
// connection is registered level-triggered (see the package doc); an epoll event carries the
// connection's shard slot in Fd and its file descriptor in Pad, so the loop finds the
// connection without a map and can tell a stale event from a reused slot.
//
// The epoll descriptor itself sits in Go's netpoller (an epoll set is readable while it has
// ready events), and the loop parks there rather than in a blocking epoll_wait: a goroutine
// blocked in a system call keeps its thread, and the runtime hands its P to another thread
// and must find one again on return, which cost two context switches per handshake on top of
// gws's (see the package doc, "Waiting").
type poller struct {
	epfd     int
	wfd      int             // eventfd
	file     *os.File        // owns epfd; registered with Go's netpoller
	raw      syscall.RawConn // file's, for parking until epfd is readable
	deadline time.Time       // the read deadline set on file (zero: none)

	// The look raw.Read repeats, made once so that waiting allocates nothing, and what it saw.
	look   func(uintptr) bool
	into   []unix.EpollEvent
	got    int
	gotErr error
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// os.NewFile puts a non-blocking descriptor into the netpoller; from here on file owns epfd.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd %d: set non-blocking: %w", epfd, err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	raw, err := file.SyscallConn()
	if err == nil {
		err = file.SetReadDeadline(time.Time{}) // fails unless the netpoller took the descriptor
	}
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("epoll fd %d: Go's netpoller: %w", epfd, err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot, Pad: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(wfd)
		file.Close()
		return nil, fmt.Errorf("register eventfd: %w", err)
	}
	p := &poller{epfd: epfd, wfd: wfd, file: file, raw: raw}
	p.look = p.lookOnce
	return p, nil
}

// readEvents is the interest of an idle connection: input, and the peer's half-close.
const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP

// add registers fd for reading under slot.
func (p *poller) add(fd int, slot int32) error {
	ev := unix.EpollEvent{Events: readEvents, Fd: slot, Pad: int32(fd)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// del removes fd from the set. Closing fd alone would not do it while another descriptor of
// the same socket is open (the kernel drops an epoll registration when the open file
// description is released, not when one of its descriptors is closed).
func (p *poller) del(fd int) error {
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// watchWritable adds (or drops) EPOLLOUT interest: only a connection with a write backlog
// waits for it, because a level-triggered EPOLLOUT on an idle socket would fire on every wait.
func (p *poller) watchWritable(fd int, slot int32, on bool) error {
	events := uint32(readEvents)
	if on {
		events |= unix.EPOLLOUT
	}
	ev := unix.EpollEvent{Events: events, Fd: slot, Pad: int32(fd)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// wait returns the ready events, parking the goroutine in Go's netpoller until there are some
// or until is reached (zero: no limit; a time already past: just look). The set is always read
// with a zero timeout, so no thread ever blocks in epoll_wait. The netpoller watches epfd
// edge-triggered, which is sound because the goroutine parks only after a look found nothing:
// any event after that look makes epfd readable anew and wakes it.
func (p *poller) wait(events []unix.EpollEvent, until time.Time) (int, error) {
	if !until.IsZero() && !time.Now().Before(until) {
		return p.poll(events)
	}
	if !until.Equal(p.deadline) {
		if err := p.file.SetReadDeadline(until); err != nil {
			return 0, fmt.Errorf("epoll fd %d: deadline: %w", p.epfd, err)
		}
		p.deadline = until
	}
	p.into, p.got, p.gotErr = events, 0, nil
	err := p.raw.Read(p.look)
	p.into = nil
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("epoll fd %d: wait: %w", p.epfd, err)
	}
	return p.got, p.gotErr
}

// lookOnce is raw.Read's callback: true when there is something to return.
func (p *poller) lookOnce(uintptr) bool {
	p.got, p.gotErr = p.poll(p.into)
	return p.got > 0 || p.gotErr != nil
}

// poll reads the ready events without blocking.
func (p *poller) poll(events []unix.EpollEvent) (int, error) {
	for {
		n, err := unix.EpollWait(p.epfd, events, 0)
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}

// wake makes the loop's next (or current) wait return. Wakes coalesce in the eventfd counter.
func (p *poller) wake() error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, err := unix.Write(p.wfd, one[:])
	if errors.Is(err, unix.EAGAIN) { // counter saturated: a wake is pending anyway
		return nil
	}
	return err
}

// consumeWake resets the eventfd counter. The loop calls it before taking its queue, so a wake
// for work queued after the take is never lost.
func (p *poller) consumeWake() {
	var buf [8]byte
	_, _ = unix.Read(p.wfd, buf[:])
}

// close closes both descriptors; only the loop's goroutine may call it, never during wait,
// and only when no other goroutine can still write the eventfd (else closeEpoll and closeWake).
func (p *poller) close() error {
	return errors.Join(p.closeWake(), p.closeEpoll())
}

// closeEpoll closes the epoll instance; only the loop's goroutine may call it, never during
// wait.
func (p *poller) closeEpoll() error { return p.file.Close() }

// closeWake closes the eventfd, once no goroutine can write it any more (see loop.wakers).
func (p *poller) closeWake() error { return unix.Close(p.wfd) }
