//go:build !unix

package wsraw

import "syscall"

// receiveBuffer leaves the dialer as it is off Unix; the slow-consumer tests then rely on
// volume alone.
func receiveBuffer(_ int, next func(network, address string, rc syscall.RawConn) error) func(string, string, syscall.RawConn) error {
	return next
}
