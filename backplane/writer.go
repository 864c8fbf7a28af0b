package backplane

import (
	"context"
	"net"
	"time"
)

// The writer half of a relay: coalesced SUBSCRIBE/UNSUBSCRIBE commands and pings.

// writeLoop sends pending SUBSCRIBE/UNSUBSCRIBE commands whenever kicked, and a PING every
// pingInterval so that a silent network failure is noticed by the reader's deadline.
func (r *relay) writeLoop(ctx context.Context) {
	tick := time.NewTicker(pingInterval)
	defer tick.Stop()
	var buf []byte
	var subs, unsubs []string
	for {
		ping := false
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-tick.C:
			ping = true
		}
		r.mu.Lock()
		conn := r.conn
		if conn == nil || (r.inflight > 0 && !ping) {
			r.mu.Unlock()
			continue
		}
		subs, unsubs = subs[:0], unsubs[:0]
		if r.inflight > 0 {
			r.mu.Unlock()
			r.write(conn, appendCommand(buf[:0], "PING", nil))
			continue
		}
		for _, st := range r.dirty {
			st.queued = false
			switch {
			case st.want && !st.onWire:
				subs = append(subs, st.name)
				st.onWire = true
				st.acks++
			case !st.want && st.onWire:
				unsubs = append(unsubs, st.name)
				st.onWire = false
				st.acks++
			case !st.want && st.acks == 0:
				r.chans.Delete(st.name)
			}
		}
		clear(r.dirty)
		r.dirty = r.dirty[:0]
		r.inflight += len(subs) + len(unsubs)
		r.mu.Unlock()

		buf = buf[:0]
		subCmd, unsubCmd := "SUBSCRIBE", "UNSUBSCRIBE"
		if r.sharded {
			subCmd, unsubCmd = "SSUBSCRIBE", "SUNSUBSCRIBE"
		}
		buf = r.appendBatches(buf, subCmd, subs)
		buf = r.appendBatches(buf, unsubCmd, unsubs)
		if ping {
			buf = appendCommand(buf, "PING", nil)
		}
		r.write(conn, buf)
		if cap(buf) > 1<<20 {
			buf = nil // do not keep a resubscription's worth of memory forever
		}
	}
}

func (r *relay) write(conn net.Conn, buf []byte) {
	if len(buf) == 0 {
		return
	}
	_ = conn.SetWriteDeadline(time.Now().Add(r.tolerance))
	if _, err := conn.Write(buf); err != nil {
		// The reader sees the broken connection too, reports it and reconnects.
		r.log.Debug("backplane: write to pubsub connection failed", "err", err)
		_ = conn.Close()
	}
}

// appendBatches appends cmd for channels in groups of at most maxChannelsPerCommand. On a
// cluster the channels of one SSUBSCRIBE must share a hash slot, so they are grouped by slot.
func (r *relay) appendBatches(buf []byte, cmd string, chans []string) []byte {
	if !r.sharded {
		for len(chans) > 0 {
			n := min(len(chans), maxChannelsPerCommand)
			buf = appendCommand(buf, cmd, chans[:n])
			chans = chans[n:]
		}
		return buf
	}
	for _, group := range groupBySlot(chans) {
		for len(group) > 0 {
			n := min(len(group), maxChannelsPerCommand)
			buf = appendCommand(buf, cmd, group[:n])
			group = group[n:]
		}
	}
	return buf
}
