package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lxzan/gws"
)

// The clients' protocols (Params.Protocol).
const (
	ProtocolV1 = "v1"
	ProtocolV2 = "v2"
	// subprotocolV2 is what a v2 client offers (docs/PROTOCOL.md).
	subprotocolV2 = "notifications.v2"
)

// v2Resume is the notifications.v2 client: it offers the subprotocol on every dial, sends a
// resume frame on open (empty on the first connect, the saved cursors on a reconnect), and
// keeps per stream the cursor of the last message or sync it received, as the reference
// client does. What the server replays counts as delivered, so the tally shows a reconnect
// without loss as such.
type v2Resume struct{}

func (v2Resume) dialOptions(_ *client, opt *gws.ClientOption) {
	if opt.RequestHeader == nil {
		opt.RequestHeader = make(map[string][]string)
	}
	opt.RequestHeader.Set("Sec-WebSocket-Protocol", subprotocolV2)
}

func (v2Resume) opened(c *client, socket *gws.Conn) error {
	c.mu.Lock()
	streams := make(map[string]string, len(c.cursors))
	for s, cur := range c.cursors {
		streams[s] = string(cur)
	}
	c.mu.Unlock()
	b, err := json.Marshal(map[string]any{"type": "resume", "streams": streams})
	if err != nil {
		return fmt.Errorf("encode resume: %w", err)
	}
	if err := socket.WriteMessage(gws.OpcodeText, b); err != nil {
		return fmt.Errorf("send resume: %w", err)
	}
	return nil
}

var (
	v2MessagePrefix = []byte(`{"type":"message"`)
	v2SyncPrefix    = []byte(`{"type":"sync"`)
	notRecovered    = []byte(`"recovered":false`)
)

// v2Frame accounts for the protocol part of a v2 frame: it saves the cursor of a message or
// sync, and counts syncs. It reports whether the frame is done with (a sync); a message goes
// on to the stamp accounting, which finds the payload's stamp inside "data".
func (c *client) v2Frame(b []byte, now int64) (done bool) {
	isMsg := bytes.HasPrefix(b, v2MessagePrefix)
	isSync := !isMsg && bytes.HasPrefix(b, v2SyncPrefix)
	if !isMsg && !isSync {
		return false
	}
	stream, ok := stringField(b, `"stream":"`)
	cursor, hasCursor := stringField(b, `"cursor":"`)
	c.mu.Lock()
	if ok && hasCursor {
		// Reuse the stream's buffer: a message costs no allocation once the stream is known.
		if c.cursors == nil {
			c.cursors = map[string][]byte{}
		}
		c.cursors[string(stream)] = append(c.cursors[string(stream)][:0], cursor...)
	}
	resumed := false
	if isSync {
		c.synced = true
		resumed = c.reconnects > 0
		if !resumed && c.pendingSyncs > 0 {
			c.pendingSyncs--
			if c.pendingSyncs == 0 {
				close(c.ready)
			}
		}
	}
	c.mu.Unlock()
	if !isSync {
		return false
	}
	c.f.syncs.Add(1)
	if resumed {
		setMax(&c.f.lastResumeSync, now)
	}
	if bytes.Contains(b, notRecovered) {
		reason, _ := stringField(b, `"reason":"`)
		if !resumed && string(reason) == "new" {
			// The first connect's fresh start: nothing was there to recover.
			return true
		}
		c.f.mu.Lock()
		c.f.unrecovered[string(reason)]++
		c.f.mu.Unlock()
	}
	return true
}

// awaitReady waits for the first connect's syncs: only messages published after a stream's
// sync are owed to a fresh start (the sync's cursor is where it begins), so the run's
// publisher starts once every connection has them.
func (c *client) awaitReady(ctx context.Context) error {
	t := time.NewTimer(dialTimeout)
	defer t.Stop()
	select {
	case <-c.ready:
		return nil
	case <-c.closed:
		return errors.New("closed before its syncs")
	case <-t.C:
		return fmt.Errorf("no sync for every stream within %s", dialTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resumedSynced counts the connections that reconnected and got a sync since.
func (f *fleet) resumedSynced() int {
	n := 0
	for _, c := range f.conns {
		if c != nil {
			c.mu.Lock()
			if c.reconnects > 0 && c.synced {
				n++
			}
			c.mu.Unlock()
		}
	}
	return n
}

// V2Report is what v2 clients were told (Params.Protocol v2), summed over every process.
type V2Report struct {
	Syncs int64 `json:"syncs"`
	// Unrecovered counts sync frames with recovered:false, by reason, except the "new" of a
	// first connect's fresh start (there was nothing to recover).
	Unrecovered map[string]int `json:"unrecovered"`
	// ResumedSynced is how many reconnected connections got a sync after their last reconnect.
	ResumedSynced int `json:"resumed_synced"`
	// LastResumeSyncNs is when the last sync on a reconnected connection arrived (unix ns).
	LastResumeSyncNs int64 `json:"last_resume_sync_ns"`
}

// unrecoveredTotal is how many syncs said recovered:false.
func (r *V2Report) unrecoveredTotal() int {
	n := 0
	for _, k := range r.Unrecovered {
		n += k
	}
	return n
}

// since is the time from t until the last resumed sync, 0 when there was none.
func (r *V2Report) since(t time.Time) float64 {
	if r == nil || r.LastResumeSyncNs == 0 || t.IsZero() {
		return 0
	}
	return float64(r.LastResumeSyncNs-t.UnixNano()) / 1e9
}
