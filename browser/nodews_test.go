package browser

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// TestNodeClientWithNpmWs: client/README.md says the client runs in Node with a constructor
// passed in, such as npm `ws`. nodews.mjs imports ../client/notifications-client.js, removes
// any global WebSocket and passes `ws`'s, connects to a node of the service (in this process,
// as for reload_test.go: building the binary takes longer than the whole test; embedded
// backplane) and publishes through the node's API once its user stream has synced. The client
// opens, syncs its user and broadcast streams (fresh start: recovered:false, reason new, each
// with a cursor) and receives the message on stream user with the cursor the API answered.
func TestNodeClientWithNpmWs(t *testing.T) {
	node := requireNodeWs(t)
	svc := servicetest.Start(t, servicetest.Options{Engine: servicetest.Engines()[0]})
	const payload = `{"type":"notification","event_type":"node_ws","data":{"n":1}}`
	var res struct {
		Events    []json.RawMessage `json:"events"`
		Published struct {
			Status int `json:"status"`
			Body   struct {
				Stream string `json:"stream"`
				Cursor string `json:"cursor"`
			} `json:"body"`
		} `json:"published"`
	}
	runScript(t, node, "nodews.mjs", map[string]any{
		"url": svc.WSURL, "token": svc.Token(t, "node-ws-user"), "timeoutMs": 5000,
		"publishURL": svc.URL + "/api/publish", "publishKey": servicetest.PublishKey,
		"publishBody": `{"user_id":"node-ws-user","message":` + payload + `}`,
	}, &res)
	var log strings.Builder
	for _, raw := range res.Events {
		log.WriteString("\n" + string(raw))
	}
	t.Logf("events:%s", log.String())

	pub := res.Published
	if pos, err := history.ParseCursor(pub.Body.Cursor); pub.Status != 202 || pub.Body.Stream != "user" || err != nil || pos.IsZero() {
		t.Fatalf("POST /api/publish: %d %+v (cursor: %v)", pub.Status, pub.Body, err)
	}
	opened, synced, messages := false, map[string]bool{}, 0
	for _, raw := range res.Events {
		var e event
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("event %s: %v", raw, err)
		}
		switch e.Type {
		case "state":
			opened = opened || e.State == "open"
		case "error":
			t.Errorf("error event %s: %s", e.Code, e.Message)
		case "sync":
			if e.Cursor == "" || e.Recovered || e.Reason != "new" {
				t.Errorf("sync of %s: cursor %q recovered %v reason %q, want a cursor and recovered:false reason new (a fresh start)", e.Stream, e.Cursor, e.Recovered, e.Reason)
			}
			synced[e.Stream] = true
		case "message":
			messages++
			if e.Stream != "user" || e.Cursor != pub.Body.Cursor || e.Replay || string(e.Data) != payload {
				t.Errorf("message %s on %s at %q (replay %v), want %s live on user at %s", e.Data, e.Stream, e.Cursor, e.Replay, payload, pub.Body.Cursor)
			}
		}
	}
	if !opened || !synced["user"] || !synced["broadcast"] || len(synced) != 2 || messages != 1 {
		t.Fatalf("opened %v, synced %v, %d messages; want open, syncs of user and broadcast, 1 message", opened, synced, messages)
	}
}

// requireNodeWs returns the node binary once node and browser/node_modules/ws are present.
// Without them the test skips saying how to install them, except under CI=true, where .ci/run
// installs them and their absence is a failure.
func requireNodeWs(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found: apt-get install nodejs npm, then (cd browser && npm ci)")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "ws", "package.json")); err != nil {
		testenv.Missing(t, "browser/node_modules/ws missing: run (cd browser && npm ci)")
	}
	return node
}
