//go:build linux

package eventloop

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// What the front does not serve itself goes to net/http: Front is the net.Listener that
// net/http's server accepts from, and each connection it hands over first reads back the bytes
// the front already read of it.

// Accept returns the next connection for net/http.
func (f *Front) Accept() (net.Conn, error) {
	for {
		f.mu.Lock()
		if len(f.toHTTP) > 0 {
			c := f.toHTTP[0]
			f.toHTTP[0] = nil
			f.toHTTP = f.toHTTP[1:]
			f.mu.Unlock()
			return c, nil
		}
		closed := f.closed
		f.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		select {
		case <-f.handed:
		case <-f.stop:
		case <-f.done:
			if f.failed != nil {
				return nil, fmt.Errorf("front: %w", f.failed)
			}
		}
	}
}

// toNetHTTP gives a connection to net/http as a net.Conn that first reads back the bytes the
// front has read of it.
func (f *Front) toNetHTTP(rd *reading, read []byte) {
	f.leave(rd)
	f.handToHTTP(rd.fd, append([]byte(nil), read...))
}

// handToHTTP turns fd into a net.Conn (net.FileConn duplicates it into Go's netpoller; fd is
// closed) that replays replay first, and queues it for Accept.
func (f *Front) handToHTTP(fd int, replay []byte) {
	file := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(file)
	file.Close()
	if err != nil {
		f.e.log.Warn("front: cannot hand a connection to net/http", "err", err)
		return
	}
	c := &replayConn{Conn: nc, replay: replay}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		c.Close()
		return
	}
	f.toHTTP = append(f.toHTTP, c)
	f.mu.Unlock()
	select {
	case f.handed <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// replayConn is a connection net/http reads from as if the front had never read it: the bytes
// the front took come first. The front's descriptor numbers never reach net/http.
type replayConn struct {
	net.Conn
	replay []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// SyscallConn lets Accept hijack a connection net/http serves (an upgrade the front left to
// it).
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no file descriptor", c.Conn)
	}
	return sc.SyscallConn()
}

// unread is what net/http has not read yet of the replay; a hijack takes it with the bytes
// net/http buffered.
func (c *replayConn) unread() []byte { return c.replay }

// admit runs admission for one upgrade and, if it neither accepted nor rejected the
// connection, sends the answer it wrote and leaves the connection to net/http, as a
// keep-alive connection after that answer.
func (f *Front) admit(w *frontWriter, r *http.Request) {
	f.upgrade.ServeHTTP(w, r)
	if w.taken {
		return
	}
	if err := writeFD(w.fd, w.response()); err != nil {
		_ = unix.Close(w.fd)
		return
	}
	f.handToHTTP(w.fd, w.pending)
}
