package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// Independent client implementations against both engines: github.com/coder/websocket (Go)
// and Node's ws package. Messages of 0, 125, 126 and 64 KiB bytes, whole and fragmented, text
// (echoed with the "Echo: " prefix) and binary (echoed unchanged).

// interopEnv lets a 64 KiB message and its 6-byte echo prefix through.
var interopEnv = map[string]string{"MAX_MESSAGE_SIZE": fmt.Sprint(1 << 20)}

// interopSizes are the message sizes exchanged: empty, the largest 7-bit length, the smallest
// 16-bit length, and 64 KiB.
var interopSizes = []int{0, 125, 126, 64 << 10}

func TestCoderWebsocketClientExchangesMessages(t *testing.T) {
	for _, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) {
			recordCheck(t, engine)
			svc := servicetest.Start(t, servicetest.Options{Engine: engine, Env: interopEnv})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, svc.DialURL(svc.Token(t, "coder")), nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			c.SetReadLimit(4 << 20)
			for _, size := range interopSizes {
				for _, typ := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
					payload, want := bytes.Repeat([]byte{'*'}, size), []byte("Echo: "+strings.Repeat("*", size))
					if typ == websocket.MessageBinary {
						payload = bytes.Repeat([]byte{0xfe}, size)
						want = payload
					}
					for _, parts := range []int{1, 3} {
						name := fmt.Sprintf("%v of %d bytes in %d frame(s)", typ, size, parts)
						if err := writeInFrames(ctx, c, typ, payload, parts); err != nil {
							t.Fatalf("%s: write: %v", name, err)
						}
						gotType, got, err := c.Read(ctx)
						if err != nil {
							t.Fatalf("%s: read: %v", name, err)
						}
						if gotType != typ || !bytes.Equal(got, want) {
							t.Fatalf("%s: got %v of %d bytes, want %v of %d bytes", name, gotType, len(got), typ, len(want))
						}
					}
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close handshake: %v", err)
			}

			sub, resp, err := websocket.Dial(ctx, svc.WSURL, &websocket.DialOptions{
				Subprotocols: []string{"notifications.v1", "bearer." + svc.Token(t, "coder")},
			})
			if err != nil {
				t.Fatalf("dial with the bearer subprotocol: %v", err)
			}
			defer sub.CloseNow()
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "notifications.v1" {
				t.Fatalf("selected subprotocol %q, want notifications.v1", got)
			}
			if err := sub.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, got, err := sub.Read(ctx); err != nil || string(got) != "Echo: hi" {
				t.Fatalf("echo over the subprotocol connection: %q, %v", got, err)
			}
			if err := sub.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close handshake: %v", err)
			}
		})
	}
}

// writeInFrames writes payload as one message in parts frames (coder/websocket writes one
// frame per Write on a message writer, and a final empty frame on Close).
func writeInFrames(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, payload []byte, parts int) error {
	if parts == 1 {
		return c.Write(ctx, typ, payload)
	}
	w, err := c.Writer(ctx, typ)
	if err != nil {
		return err
	}
	size := (len(payload) + parts - 1) / parts
	for i := 0; i < parts; i++ {
		lo, hi := min(i*size, len(payload)), min((i+1)*size, len(payload))
		if _, err := w.Write(payload[lo:hi]); err != nil {
			return err
		}
	}
	return w.Close()
}

func TestNodeWsClientExchangesMessages(t *testing.T) {
	node := nodeWithPackages(t, "ws")
	script, _ := filepath.Abs(filepath.Join("..", "browser", "wsclient.mjs"))
	for _, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) {
			recordCheck(t, engine)
			svc := servicetest.Start(t, servicetest.Options{Engine: engine, Env: interopEnv})
			tok := svc.Token(t, "node")
			cfg, _ := json.Marshal(map[string]any{"url": svc.DialURL(tok), "bareURL": svc.WSURL, "token": tok, "timeoutMs": 5000})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, script, string(cfg))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var res struct {
				Results []struct {
					Name   string `json:"name"`
					OK     bool   `json:"ok"`
					Detail string `json:"detail"`
				} `json:"results"`
				Error string `json:"error"`
			}
			if jerr := json.Unmarshal(out, &res); jerr != nil {
				t.Fatalf("node %s: %v (%v); stdout %q; stderr %q", script, err, jerr, out, stderr.String())
			}
			if err != nil || res.Error != "" {
				t.Fatalf("node client failed: %v %s; stderr %q", err, res.Error, stderr.String())
			}
			const want = 4*2*2 + 1 + 3 // sizes × kinds × (whole, fragmented) + UTF-8 + subprotocol checks
			if len(res.Results) != want {
				t.Errorf("%d results, want %d", len(res.Results), want)
			}
			for _, r := range res.Results {
				if !r.OK {
					t.Errorf("node ws: %s: %s", r.Name, r.Detail)
				}
			}
		})
	}
}

// nodeWithPackages returns the node binary after checking that browser/node_modules holds
// the named packages. Without them the test skips with the command to run — except under
// CI=true, where .ci/run installs them and their absence is a failure.
func nodeWithPackages(t *testing.T, packages ...string) string {
	t.Helper()
	missing := func(msg string) { t.Helper(); testenv.Missing(t, msg) }
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found: apt-get install nodejs npm, then (cd browser && npm ci)")
	}
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join("..", "browser", "node_modules", p, "package.json")); err != nil {
			missing(fmt.Sprintf("browser/node_modules/%s missing: run (cd browser && npm ci)", p))
		}
	}
	return node
}
