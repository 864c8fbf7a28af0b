//go:build linux

package app

import (
	"github.com/huleedu/websocket-service/eventloop"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

func newEpollEngine(opts session.Options) (server.Engine, error) { return eventloop.New(opts) }
