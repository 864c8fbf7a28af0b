package gwsengine

import (
	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/registry"
)

// Deliver fans each payload out to its audience on every shard. A payload is framed once, by
// its gws.Broadcaster, and the same bytes are queued to every target socket; nothing here
// waits for a socket.
func (e *Engine) Deliver(batch []registry.Delivery) {
	sp := e.scratch.Get().(*[]*conn)
	targets := *sp
	for _, d := range batch {
		bc := gws.NewBroadcaster(gws.OpcodeText, d.Payload)
		n := int64(len(d.Payload))
	shards:
		for _, s := range e.shards {
			s.fanout.RLock()
			targets = s.lookup(d.Target, targets[:0])
			for _, c := range targets {
				if err := c.enqueue(bc, n); err != nil {
					s.fanout.RUnlock()
					// The frame could not be built: the same failure awaits every target. (The
					// router passes no invalid UTF-8 and gws has no write limit here, so this
					// is a safeguard, not a path.)
					e.log.Warn("deliver: payload refused", "target", d.Target.Kind.String(), "bytes", n, "error", err)
					break shards
				}
			}
			s.fanout.RUnlock()
		}
		_ = bc.Close() // the frame's buffer returns to gws's pool after its last write
	}
	clear(targets)
	*sp = targets[:0]
	e.scratch.Put(sp)
}
