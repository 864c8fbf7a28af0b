//go:build unix

package enginetest

import "syscall"

// setRecvBuffer sizes a socket's receive buffer. It must happen before connect: shrinking the
// buffer of an established connection below the window already advertised makes the kernel
// drop data and the sender back off for seconds.
func setRecvBuffer(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
