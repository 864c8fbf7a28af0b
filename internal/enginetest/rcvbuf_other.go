//go:build !unix

package enginetest

// setRecvBuffer is a no-op off Unix; the slow-consumer tests then rely on volume alone.
func setRecvBuffer(uintptr, int) error { return nil }
