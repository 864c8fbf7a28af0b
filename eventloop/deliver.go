//go:build linux

package eventloop

import (
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/resume"
)

// deliver fans a batch out: each payload is encoded once per shard and the same frame is
// queued to every target; connections are written once, after the whole batch (flushDirty).
// A target that goes over the send queue limit inside the batch is first written right away
// (non-blocking), so a batch larger than the limit does not doom a reader that keeps up; only
// what its socket will not take counts against it (send). While the registry's lists are
// being iterated no connection may leave them: a connection the fan-out dooms or breaks is
// closed by reapDoomed, after the batch.
func (l *loop) deliver(batch []registry.Delivery) {
	l.fanout = true
	for i := range batch {
		d := &batch[i]
		targets := l.reg.Lookup(d.Target)
		if len(targets) == 0 {
			if d.Trace != nil {
				l.traceApplied(d.Trace, 0, 0, 0, 0)
			}
			continue
		}
		// v1 gets the payload verbatim (nothing for a gap notice); v2 its frame, built once
		// for every v2 target of the shard, and only if there is one.
		var frame, v2 []byte
		var stream string
		sent := 0
		closed, doomed := 0, 0 // for the trace
		for _, c := range targets {
			if c.flags&flagDoomed != 0 {
				closed++
				continue
			}
			f := frame
			if c.flags&flagV2 == 0 {
				if d.Gap != nil {
					continue
				}
				if frame == nil {
					frame = encodeFrame(opText, d.Payload)
				}
				f = frame
			} else {
				if v2 == nil {
					v2 = encodeFrame(opText, resume.DeliveryFrame(d))
				}
				if c.flags&(flagResuming|flagFloor) != 0 {
					if stream == "" {
						stream = d.Target.Stream()
					}
					if l.holdOrDrop(c, stream, d.Position, v2) {
						continue
					}
				}
				f = v2
			}
			sent++
			l.send(c, f)
			if c.flags&flagDoomed != 0 { // this frame doomed it: over the send queue limit
				doomed++
			}
		}
		l.e.metrics.MessagesSent.Add(sent)
		if d.Trace != nil {
			l.traceApplied(d.Trace, len(targets), sent-doomed, closed, doomed)
		}
	}
	l.fanout = false
	l.reapDoomed()
}
