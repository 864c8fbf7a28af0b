//go:build linux

package app

import (
	"github.com/huleedu/websocket-service/eventloop"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

func newEpollEngine(opts session.Options) (server.Engine, error) { return eventloop.New(opts) }

// The epoll engine reads upgrade requests off the listening socket itself; were its Front to
// drift from server.Fronter, the server would quietly leave every upgrade to net/http.
var _ server.Fronter = (*eventloop.Engine)(nil)
