//go:build linux

package eventloop

import "golang.org/x/sys/unix"

// faults lets tests fail or pause the engine at the points where a descriptor changes hands,
// which no real client can reach on demand (an EPOLL_CTL_ADD refused at
// fs.epoll.max_user_watches, an epoll wait that errors, a goroutine descheduled between two
// system calls). New leaves every hook nil; only tests construct an engine with them
// (newEngine), before any loop runs, so the hooks are read without synchronisation.
type faults struct {
	// addConn runs before a connection's EPOLL_CTL_ADD; a non-nil error replaces the call.
	addConn func(fd int) error
	// wait runs before each epoll wait of shard; a non-nil error replaces the wait.
	wait func(shard int) error
	// closedFD runs right after the engine closed a connection's descriptor.
	closedFD func(fd int)
	// wake runs after a goroutine claimed shard's eventfd write, just before it writes.
	wake func(shard int)
	// deliver runs on shard's goroutine before it applies a delivery batch.
	deliver func(shard int)
	// adoptQueued runs in Accept after the adoption is queued, before the 101 is written.
	adoptQueued func()
}

// closeFD closes a connection's descriptor. Every close of one goes through here, so a test
// can see each close as it happens (and what a descriptor number is reused for next).
func (e *Engine) closeFD(fd int) error {
	err := unix.Close(fd)
	if f := e.faults.closedFD; f != nil {
		f(fd)
	}
	return err
}
