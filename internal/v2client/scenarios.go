package v2client

import (
	"testing"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
)

// GapNotice delivers, through deliver (an engine's Deliver), a message, a gap notice and
// another message to group g, and checks that c (a v2 client in g, past its syncs) gets the
// message, a sync recovered:false for the gap, then the next message: a gap notice is a
// mid-session sync between the messages around the hole. It returns the two payloads a v1
// client in g must get (nothing for the gap).
func GapNotice(t testing.TB, deliver func([]registry.Delivery), c *Client) []string {
	t.Helper()
	g := registry.Target{Kind: registry.Group, ID: "g"}
	p := func(seq uint64) history.Position { return history.Position{Epoch: 9, Seq: seq, Tag: uint32(seq)} }
	deliver([]registry.Delivery{
		{Target: g, Payload: []byte(`{"n":1}`), Position: p(1)},
		{Target: g, Position: p(4), Gap: &registry.Gap{Reason: history.ReasonUnavailable, Missed: 3}},
		{Target: g, Payload: []byte(`{"n":5}`), Position: p(5)},
	})
	want := []string{
		`{"type":"message","stream":"group:g","cursor":"` + p(1).Cursor() + `","data":{"n":1}}`,
		`{"type":"sync","stream":"group:g","cursor":"` + p(4).Cursor() + `","recovered":false,"reason":"unavailable","missed":3}`,
		`{"type":"message","stream":"group:g","cursor":"` + p(5).Cursor() + `","data":{"n":5}}`,
	}
	for _, w := range want {
		f, err := c.Next(10 * time.Second)
		if err != nil || f.Raw != w {
			t.Fatalf("got %q (%v), want %s", f.Raw, err, w)
		}
	}
	return []string{`{"n":1}`, `{"n":5}`}
}
