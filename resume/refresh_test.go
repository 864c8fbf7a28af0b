package resume_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/registry"
)

// A token refresh that changes the groups tells a v2 client, before the auth_ok: unsubscribed
// for a removed group, a sync (recovered:false, reason new, with a cursor) for an added one;
// then messages of the added group arrive and none of the removed one.
func TestRefreshAnnouncesStreamChanges(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, nil).node(t)
		s.Publish(t, registry.Target{Kind: registry.Group, ID: "c"}, `{"before":true}`)
		c := dialV2(t, s, nil, "u1", "a", "b")
		syncs(t, c, "user", "group:a", "group:b", "broadcast")
		b, _ := json.Marshal(map[string]string{"type": "auth", "token": s.Token(t, "u1", "b", "c")})
		if err := c.SendText(string(b)); err != nil {
			t.Fatal(err)
		}
		// Both announcements come before the auth_ok.
		var unsub, sync, ok bool
		for !ok {
			f := next(t, c)
			switch {
			case f.Type == "auth_ok":
				if !unsub || !sync {
					t.Fatalf("auth_ok before the announcements (unsubscribed %v, sync %v)", unsub, sync)
				}
				ok = true
			case f.Type == "unsubscribed" && f.Stream == "group:a":
				unsub = true
			case f.IsSync() && f.Stream == "group:c":
				if f.IsRecovered() || f.Reason != "new" || f.CursorString() == "" {
					t.Fatalf("added group: %s, want recovered:false reason new with a cursor", f.Raw)
				}
				sync = true
			default:
				t.Fatalf("unexpected %s", f.Raw)
			}
		}
		s.Publish(t, registry.Target{Kind: registry.Group, ID: "a"}, `{"removed":true}`)
		s.Publish(t, registry.Target{Kind: registry.Group, ID: "c"}, `{"added":true}`)
		if f := next(t, c); f.Stream != "group:c" || string(f.Data) != `{"added":true}` {
			t.Fatalf("after the refresh: %s, want the added group's message", f.Raw)
		}
		if f, err := c.Next(300 * time.Millisecond); err == nil {
			t.Fatalf("after the refresh: %s", f.Raw)
		}
	})
}
