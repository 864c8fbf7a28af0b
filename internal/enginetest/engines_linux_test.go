//go:build linux

package enginetest_test

import (
	"github.com/huleedu/websocket-service/eventloop"
	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

// kinds are the engines under test: the epoll engine exists on Linux only.
func kinds() []enginetest.Kind {
	epoll := enginetest.Kind{
		Name: "epoll",
		New: func(o session.Options) (server.Engine, error) {
			e, err := eventloop.New(o)
			if err != nil {
				return nil, err
			}
			return e, nil
		},
		ErrClosed: eventloop.ErrClosed,
	}
	return []enginetest.Kind{gwsKind, epoll}
}
