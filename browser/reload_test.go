package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/registry"
)

// reloadPage runs client/notifications-client.js with sessionStorage, as a frontend that wants
// a page reload to resume, and logs every event in window.log.
const reloadPage = `<!doctype html><html><head><meta charset="utf-8"><script type="module">
import { NotificationsClient } from '/notifications-client.js';
const log = [];
const client = new NotificationsClient({
  url: %q,
  getToken: async () => (await fetch('/token')).text(),
  storage: sessionStorage,
  storageKey: 'notifications:reload-user',
});
for (const type of ['message', 'sync', 'error']) client.on(type, (detail) => log.push({ type, ...detail }));
window.log = log;
client.connect();
</script></head><body>reload</body></html>`

// event is one event of client/notifications-client.js: an entry of the page's window.log,
// or of what nodews.mjs reports.
type event struct {
	Type      string          `json:"type"`
	State     string          `json:"state"`
	Stream    string          `json:"stream"`
	Cursor    string          `json:"cursor"`
	Data      json.RawMessage `json:"data"`
	Replay    bool            `json:"replay"`
	Recovered bool            `json:"recovered"`
	Reason    string          `json:"reason"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
}

// TestChromiumPageReloadResumesFromSessionStorage: a page keeps its cursors in sessionStorage;
// it receives messages 1 and 2, is left (its WebSocket closes), 3 and 4 are published, and the
// page is loaded again: the new page resumes from the stored cursors, so it gets 3 and 4 in
// the replay, once, and every stream syncs recovered:true — not 1 and 2 again, nor a
// recovered:false "new" start.
func TestChromiumPageReloadResumesFromSessionStorage(t *testing.T) {
	node := requireBrowserTools(t)
	svc := servicetest.Start(t, servicetest.Options{Engine: servicetest.Engines()[len(servicetest.Engines())-1],
		Env: map[string]string{"ALLOWED_ORIGINS": "*"}})
	token := svc.Token(t, "reload-user", "class7")
	client, err := os.ReadFile(filepath.Join("..", "client", "notifications-client.js"))
	if err != nil {
		t.Fatal(err)
	}
	srv := servePage(t)
	srv.mux.HandleFunc("GET /reload", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, reloadPage, svc.WSURL)
	})
	srv.mux.HandleFunc("GET /notifications-client.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(client)
	})
	srv.mux.HandleFunc("GET /token", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(token)) })
	srv.mux.HandleFunc("GET /publish", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		payload := `{"seq":` + r.URL.Query().Get("seq") + `}`
		if _, err := svc.App.Server().Publish(ctx, registry.Target{Kind: registry.User, ID: "reload-user"}, []byte(payload)); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	var res struct{ First, Second []event }
	runScript(t, node, "reload.mjs", map[string]any{"chromium": chromiumPath, "pageURL": srv.origin + "/reload", "timeoutMs": 15000}, &res)
	t.Logf("first load: %+v", res.First)
	t.Logf("second load: %+v", res.Second)
	if got := userSeqs(res.First); !equalInts(got, []int{1, 2}) {
		t.Errorf("first load: user messages %v, want [1 2]", got)
	}
	if got := userSeqs(res.Second); !equalInts(got, []int{3, 4}) {
		t.Errorf("second load: user messages %v, want [3 4] (resumed from the stored cursor, once each)", got)
	}
	syncs := 0
	for _, e := range res.Second {
		switch {
		case e.Type == "sync" && !e.Recovered:
			t.Errorf("second load: %s synced recovered:false (%s): the stored cursors were not used", e.Stream, e.Reason)
		case e.Type == "sync":
			syncs++
		case e.Type == "message" && !e.Replay:
			t.Errorf("second load: message %s came live, want it in the replay before the sync", e.Data)
		case e.Type == "error":
			t.Errorf("second load: error %s", e.Code)
		}
	}
	if syncs != 3 {
		t.Errorf("second load: %d recovered syncs, want 3 (user, group:class7, broadcast)", syncs)
	}
}

func userSeqs(log []event) []int {
	var out []int
	for _, e := range log {
		if e.Type != "message" || e.Stream != "user" {
			continue
		}
		var p struct{ Seq json.Number }
		if json.Unmarshal(e.Data, &p) == nil {
			n, _ := strconv.Atoi(p.Seq.String())
			out = append(out, n)
		}
	}
	return out
}

func equalInts(a, b []int) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}
