package e2e_test

import (
	"context"
	"testing"
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
