//go:build linux

package eventloop

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// frontWriter is the http.ResponseWriter of an upgrade the front read: admission writes a
// refusal into it as into net/http's, and Accept and Reject take its descriptor instead of
// hijacking one. It belongs to the admission goroutine.
type frontWriter struct {
	fd      int    // the accepted descriptor; the engine's once taken
	pending []byte // what the client sent behind its request head
	taken   bool   // Accept or Reject took fd

	header http.Header
	status int
	body   []byte
}

func (w *frontWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 4)
	}
	return w.header
}

func (w *frontWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *frontWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

// response is the answer as net/http would send it: status line, the handler's headers,
// Date and Content-Length, then the body.
func (w *frontWriter) response() []byte {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	b := make([]byte, 0, 192+len(w.body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	keys := make([]string, 0, len(w.header))
	for k := range w.header {
		if k != "Content-Length" && k != "Date" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range w.header[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(w.body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, w.body...)
}

// take gives the descriptor to the engine, for Reject (which hands it to a shard as it is).
func (w *frontWriter) take() (fd int, pending []byte) {
	w.taken = true
	return w.fd, w.pending
}

// dup gives Accept a duplicate of the descriptor for its shard; w keeps the original, which
// Accept writes the 101 through and closes (write101, Close), so a shard that ends the
// connection meanwhile can never have the 101 land on a reused number.
func (w *frontWriter) dup() (fd int, pending []byte, err error) {
	fd, err = unix.FcntlInt(uintptr(w.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("dup: %w", err)
	}
	w.taken = true
	return fd, w.pending, nil
}

func (w *frontWriter) write101(b []byte) error { return writeFD(w.fd, b) }

func (w *frontWriter) Close() error { return unix.Close(w.fd) }

// writeFD writes all of b to a non-blocking socket, waiting at most handshakeWriteTimeout for
// room (a fresh socket takes a handshake's answer at once).
func writeFD(fd int, b []byte) error {
	deadline := time.Now().Add(handshakeWriteTimeout)
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if n > 0 {
			b = b[n:]
		}
		switch {
		case err == nil, errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("write: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("write: %w", unix.ETIMEDOUT)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
	}
	return nil
}
