package enginetest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/gwsengine"
	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/server"
	"github.com/huleedu/websocket-service/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gwsKind is the gws engine, which runs everywhere.
var gwsKind = enginetest.Kind{
	Name: "gws",
	New: func(o session.Options) (server.Engine, error) {
		e, err := gwsengine.New(o)
		if err != nil {
			return nil, err
		}
		return e, nil
	},
	ErrClosed: gwsengine.ErrClosed,
	SlowDrops: 1, // the message that did not fit
}

// each runs f for every engine, as parallel subtests of a parallel test.
func each(t *testing.T, f func(t *testing.T, k enginetest.Kind)) {
	t.Parallel()
	for _, k := range kinds() {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			f(t, k)
		})
	}
}
