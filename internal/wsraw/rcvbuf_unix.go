//go:build unix

package wsraw

import (
	"errors"
	"syscall"
)

// receiveBuffer is a dialer Control that sets SO_RCVBUF to size, after next if there is one.
// It must act before connect: shrinking the buffer of an established connection below the
// window already advertised makes the kernel drop data and the sender back off for seconds.
func receiveBuffer(size int, next func(network, address string, rc syscall.RawConn) error) func(string, string, syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		if next != nil {
			if err := next(network, address, rc); err != nil {
				return err
			}
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		})
		return errors.Join(err, serr)
	}
}
