package sequence

import (
	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/tracing"
)

// traceLive gives the delivery that placing the live message m appended to out (from index
// from on), if any, its delivery span when the sampler keeps it, in the trace of m's
// traceparent. Messages delivered by a gap repair (held behind it, or read from history) go
// without one.
func traceLive(rx *tracing.Receive, out []registry.Delivery, from int, m *backplane.Message) {
	if i := len(out) - 1; i >= from && out[i].Gap == nil {
		out[i].Trace = rx.Delivery(m.Traceparent, m.Channel, out[i].Target.Kind.String(), m.Position)
	}
}
