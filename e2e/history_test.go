package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

// Publishing through the API stores the message in its stream's history and publishes it in
// an envelope; a v1 client still receives exactly the bytes that were published, whether they
// came through the API, through FCALL ws_publish from a backend, or through plain PUBLISH.
func TestSequencedPublishReachesV1ClientsByteForByte(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, bp string) {
		n := startNode(t, engine, bp, nil)
		c := dial(t, n.Service, "u1", "class7")
		waitActive(t, n.Service, 1)
		var last history.Position
		for _, tc := range []struct{ body, stream, channel, want string }{
			{`{"user_id":"u1","message":{ "z":1,  "a" : [ 1,2 ] , "s":"\u00e9 ü" }}`, "user", "ws:u1", `{ "z":1,  "a" : [ 1,2 ] , "s":"\u00e9 ü" }`},
			{`{"group":"class7","message":"line one\nline two"}`, "group:class7", "ws-group:class7", "line one\nline two"},
			{`{"broadcast":true,"message":[1, 2]}`, "broadcast", "ws-broadcast", `[1, 2]`},
			{`{"user_id":"u1","message":"second"}`, "user", "ws:u1", "second"},
		} {
			status, text := postPublish(t, n.Service, servicetest.PublishKey, tc.body)
			var reply struct{ Channel, Stream, Cursor string }
			if status != http.StatusAccepted || json.Unmarshal([]byte(text), &reply) != nil {
				t.Fatalf("POST %s: %d %s", tc.body, status, text)
			}
			pos, err := history.ParseCursor(reply.Cursor)
			if reply.Channel != tc.channel || reply.Stream != tc.stream || err != nil || pos.IsZero() {
				t.Fatalf("POST %s: reply %+v (cursor: %v)", tc.body, reply, err)
			}
			expectText(t, c, tc.want)
			last = pos
		}
		if last.Seq != 2 {
			t.Fatalf("second message on the user stream at %+v, want seq 2", last)
		}
		if n.rdb == nil {
			return
		}
		ctx := context.Background()
		h, m := history.Keys("ws:u1")
		if err := n.rdb.FCall(ctx, history.PublishFunction, []string{h, m}, "ws:u1", `{"from":"a backend"}`).Err(); err != nil {
			t.Fatalf("FCALL: %v", err)
		}
		expectText(t, c, `{"from":"a backend"}`)
		if got := n.rdb.XLen(ctx, h).Val(); got != 3 {
			t.Fatalf("history of ws:u1 holds %d messages, want 3", got)
		}
		n.publish(t, user("u1"), `{"plain":true}`)
		expectText(t, c, `{"plain":true}`)
	})
}
