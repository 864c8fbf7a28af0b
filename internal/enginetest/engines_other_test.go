//go:build !linux

package enginetest_test

import "github.com/huleedu/websocket-service/internal/enginetest"

// kinds are the engines under test: the epoll engine exists on Linux only.
func kinds() []enginetest.Kind { return []enginetest.Kind{gwsKind} }
