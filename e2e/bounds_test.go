package e2e_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/session"
)

// What one connection can make the server hold, and the sizes it must still serve.

// A backplane payload that is not UTF-8 cannot be a text frame (a browser would fail the
// connection): both engines drop it, count it, and deliver what follows.
func TestNonUTF8PayloadFromRedisIsDroppedAndCountedAndTheNextArrives(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, redisBP, nil)
		c := dial(t, n.Service, "u1", "class7")
		waitActive(t, n.Service, 1)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		ch := n.App.Server().Topics().GroupChannel("class7")
		for _, p := range []string{"bad \xff\xfe bytes", "bad again \xc3"} {
			if err := n.rdb.Publish(ctx, ch, p).Err(); err != nil {
				t.Fatalf("PUBLISH: %v", err)
			}
		}
		n.publish(t, group("class7"), `{"after":"bad"}`)
		expectText(t, c, `{"after":"bad"}`)
		n.WaitMetric(t, `websocket_messages_dropped_total{reason="invalid_utf8"}`, 2, wait)
		stillOpen(t, c)
	})
}

// A frame whose first bytes arrived must be complete within session.FrameTimeout: bytes that
// trickle in do not extend it (the server holds the frame meanwhile). Both engines then close
// 1001 and count the frame.
func TestIncompleteFrameIsClosed1001AtItsDeadlineWhateverTrickles(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
		f := encodeFrame(true, opBinary, bytes.Repeat([]byte("a"), 1000), true)
		c.write(t, f[:8]) // header and mask key
		start := time.Now()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for i := 8; i < len(f); i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write(f[i : i+1]); err != nil {
					return
				}
			}
		}()
		frames, err := c.readUntilClose(3 * session.FrameTimeout)
		if err != nil || lastClose(frames) != 1001 {
			t.Fatalf("after %v: frames %s, error %v; want a close 1001", time.Since(start), opcodes(frames), err)
		}
		if took := time.Since(start); took < session.FrameTimeout-time.Second {
			t.Fatalf("closed after %v, before the frame's deadline of %v", took, session.FrameTimeout)
		}
		n.WaitMetric(t, `websocket_messages_dropped_total{reason="incomplete_frame"}`, 1, wait)
		n.WaitMetric(t, `websocket_disconnects_total{code="1001"}`, 1, wait)
	})
}
