package gwsengine

import (
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/v2client"
	"github.com/huleedu/websocket-service/internal/wsclient"
)

// A gap notice reaches a v2 connection as a mid-session sync recovered:false, between the
// messages around the hole, and leaves it open; a v1 connection gets nothing for it.
func TestGapNotice(t *testing.T) {
	r := newRig(t)
	v2, err := v2client.Dial(r.wsURL(r.token("u1", []string{"g"}, time.Hour)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if _, err := v2.Syncs(3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	v1 := wsclient.Dial(t, r.wsURL(r.token("u2", []string{"g"}, time.Hour)))
	r.waitConns(2)
	for _, want := range v2client.GapNotice(t, r.eng.Deliver, v2) {
		if got := v1.NextText(t, 5*time.Second); got != want {
			t.Fatalf("v1 got %s, want %s (nothing for the gap)", got, want)
		}
	}
}
