package gwsengine

import (
	"github.com/lxzan/gws"

	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
)

// Deliver fans each payload out to its audience on every shard. A payload is framed once, by
// its gws.Broadcaster, and the same bytes are queued to every target socket; nothing here
// waits for a socket.
func (e *Engine) Deliver(batch []registry.Delivery) {
	sp := e.scratch.Get().(*[]*conn)
	targets := *sp
	for i := range batch {
		d := &batch[i]
		// v1 gets the payload verbatim (nothing for a gap notice); v2 its frame, built once
		// for every v2 target, and only if there is one.
		var bc, bc2 *gws.Broadcaster
		var v2 []byte
		var stream string
		if d.Gap == nil {
			bc = gws.NewBroadcaster(gws.OpcodeText, d.Payload)
		}
	shards:
		for _, s := range e.shards {
			s.fanout.RLock()
			targets = s.lookup(d.Target, targets[:0])
			for _, c := range targets {
				b, n := bc, int64(len(d.Payload))
				if c.v2 != nil {
					if v2 == nil {
						v2 = resume.DeliveryFrame(d)
						bc2 = gws.NewBroadcaster(gws.OpcodeText, v2)
						stream = d.Target.Stream()
					}
					if (!c.v2.live.Load() || c.v2.floors.Load()) && c.holdOrDrop(stream, d.Position, v2) {
						continue
					}
					b, n = bc2, int64(len(v2))
				}
				if b == nil {
					continue
				}
				if err := c.enqueue(b, n); err != nil {
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
		// The frames' buffers return to gws's pool after their last write.
		if bc != nil {
			_ = bc.Close()
		}
		if bc2 != nil {
			_ = bc2.Close()
		}
	}
	clear(targets)
	*sp = targets[:0]
	e.scratch.Put(sp)
}
