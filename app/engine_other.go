//go:build !linux

package app

import (
	"errors"

	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

// Config validation refuses ENGINE=epoll off Linux; this is the backstop.
func newEpollEngine(session.Options) (server.Engine, error) {
	return nil, errors.New("the epoll engine needs Linux; set WEBSOCKET_SERVICE_ENGINE=gws")
}
