//go:build linux

package eventloop

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// wakeSlot marks the eventfd's epoll registration; connection registrations carry their
// shard slot (≥ 0).
const wakeSlot = -1

// poller is one shard's epoll instance plus the eventfd other goroutines use to wake it. Every
// connection is registered level-triggered (see the package doc); an epoll event carries the
// connection's shard slot in Fd and its file descriptor in Pad, so the loop finds the
// connection without a map and can tell a stale event from a reused slot.
type poller struct {
	epfd int
	wfd  int // eventfd
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot, Pad: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(wfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("register eventfd: %w", err)
	}
	return &poller{epfd: epfd, wfd: wfd}, nil
}

// readEvents is the interest of an idle connection: input, and the peer's half-close.
const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP

// add registers fd for reading under slot.
func (p *poller) add(fd int, slot int32) error {
	ev := unix.EpollEvent{Events: readEvents, Fd: slot, Pad: int32(fd)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
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

// wait blocks for events, at most msec milliseconds (-1: no limit). EINTR is not an error.
func (p *poller) wait(events []unix.EpollEvent, msec int) (int, error) {
	n, err := unix.EpollWait(p.epfd, events, msec)
	if errors.Is(err, unix.EINTR) {
		return 0, nil
	}
	return n, err
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

func (p *poller) close() error {
	return errors.Join(unix.Close(p.wfd), unix.Close(p.epfd))
}
