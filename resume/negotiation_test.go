package resume_test

import (
	"testing"

	"github.com/huleedu/websocket-service/internal/v2client"
)

// The server selects notifications.v2 whenever a client offers it, whatever else it offers,
// never the bearer entry; a client that offers only v1 gets v1, payloads verbatim.
func TestSubprotocolNegotiation(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, nil).node(t)
		tok := s.Token(t, "u1")
		for _, tc := range []struct {
			offer []string
			want  string
		}{
			{[]string{"notifications.v1", "notifications.v2", "bearer." + tok}, "notifications.v2"},
			{[]string{"bearer." + tok, "notifications.v2"}, "notifications.v2"},
			{[]string{"notifications.v1", "bearer." + tok}, "notifications.v1"},
		} {
			c, err := v2client.Dial(s.WSURL, nil, v2client.Options{Subprotocols: tc.offer, NoResume: true})
			if err != nil {
				t.Fatalf("offer %v: %v", len(tc.offer), err)
			}
			if got := c.Selected(); got != tc.want {
				t.Fatalf("offered %d protocols (v2 %v): selected %q, want %q", len(tc.offer), tc.want == "notifications.v2", got, tc.want)
			}
			if tc.want != "notifications.v2" {
				waitActive(t, s, 1)
				s.Publish(t, userT, ` {"verbatim": true} `)
				if f := next(t, c); f.Raw != ` {"verbatim": true} ` {
					t.Fatalf("v1 got %q, want the payload verbatim", f.Raw)
				}
			}
			c.Close()
			waitActive(t, s, 0)
		}
	})
}
