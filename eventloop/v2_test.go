//go:build linux

package eventloop

import (
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/v2client"
)

// A gap notice reaches a v2 connection as a mid-session sync recovered:false, between the
// messages around the hole, and leaves it open; a v1 connection gets nothing for it.
func TestGapNotice(t *testing.T) {
	h := newHarness(t, nil)
	v2, err := v2client.Dial(h.wsURL(t, "u1", "g"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if _, err := v2.Syncs(3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	v1 := dialRaw(t, h.addr, "/ws?token="+h.token(t, "u2", []string{"g"}, time.Hour), nil, nil)
	for _, want := range v2client.GapNotice(t, h.engine.Deliver, v2) {
		if _, p := v1.expectFrame(10 * time.Second); string(p) != want {
			t.Fatalf("v1 got %s, want %s (nothing for the gap)", p, want)
		}
	}
}
