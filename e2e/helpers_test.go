// Package e2e_test runs the whole service on loopback, over both engines and both backplanes,
// and checks what a browser or a backend sees: messages, close codes, HTTP statuses, metrics.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/registry"
)

// wait bounds every single wait of the suite: generous for -race on two cores, still short.
const wait = 5 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupBinaries()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		// Every service a test started has been shut down by now: nothing of it may linger.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the suite: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Backplanes the suite runs over where delivery is concerned.
const (
	embedded = servicetest.Embedded
	redisBP  = servicetest.Redis
)

// eachEngine runs f as a parallel subtest per engine.
func eachEngine(t *testing.T, f func(t *testing.T, engine string)) {
	t.Helper()
	for _, e := range servicetest.Engines() {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			f(t, e)
		})
	}
}

// eachEngineAndBackplane runs f as a parallel subtest per engine and backplane.
func eachEngineAndBackplane(t *testing.T, f func(t *testing.T, engine, backplane string)) {
	t.Helper()
	servicetest.EachEngineAndBackplane(t, f)
}

// node is a service under test with the means to publish to it as a backend would.
type node struct {
	*servicetest.Service
	t     *testing.T
	redis *redistest.Server // nil on the embedded backplane
	rdb   *redis.Client
}

// startNode starts a service on engine and backplane with extra variables (names without the
// prefix).
func startNode(t *testing.T, engine, backplane string, env map[string]string) *node {
	t.Helper()
	n := &node{t: t}
	o := servicetest.Options{Engine: engine, Env: env}
	if backplane == redisBP {
		n.redis = redistest.Start(t)
		n.rdb = n.redis.Client(t)
		o.RedisURL = n.redis.URL()
	}
	n.Service = servicetest.Start(t, o)
	return n
}

// publish sends payload to target the way a backend does: PUBLISH on Redis, or POST
// /api/publish on the embedded backplane.
func (n *node) publish(t *testing.T, target registry.Target, payload string) {
	t.Helper()
	if n.rdb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := n.rdb.Publish(ctx, n.App.Server().Topics().Channel(target), payload).Err(); err != nil {
			t.Fatalf("PUBLISH: %v", err)
		}
		return
	}
	// Built by hand: json.Marshal would compact a RawMessage and the test could not see
	// whether the service forwards the bytes verbatim.
	msg := payload
	if !json.Valid([]byte(payload)) {
		b, _ := json.Marshal(payload)
		msg = string(b)
	}
	var b string
	switch target.Kind {
	case registry.User:
		id, _ := json.Marshal(target.ID)
		b = `{"user_id":` + string(id) + `,"message":` + msg + `}`
	case registry.Group:
		id, _ := json.Marshal(target.ID)
		b = `{"group":` + string(id) + `,"message":` + msg + `}`
	default:
		b = `{"broadcast":true,"message":` + msg + `}`
	}
	if status, text := postPublish(t, n.Service, servicetest.PublishKey, b); status != http.StatusAccepted {
		t.Fatalf("POST /api/publish: %d %s", status, text)
	}
}

func user(id string) registry.Target  { return registry.Target{Kind: registry.User, ID: id} }
func group(id string) registry.Target { return registry.Target{Kind: registry.Group, ID: id} }

var everyone = registry.Target{Kind: registry.Broadcast}

// postPublish POSTs body to /api/publish with key (none when empty).
func postPublish(t *testing.T, s *servicetest.Service, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+"/api/publish", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/publish: %v", err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(text)
}

// dial connects a recording gws client for sub with groups.
func dial(t *testing.T, s *servicetest.Service, sub string, groups ...string) *servicetest.Client {
	t.Helper()
	return servicetest.Dial(t, s.DialURL(s.Token(t, sub, groups...)))
}

// waitActive waits until the node counts n open connections: a connection is counted once it
// is registered, so a message published afterwards reaches it on either engine.
func waitActive(t *testing.T, s *servicetest.Service, n int) {
	t.Helper()
	s.WaitMetric(t, "websocket_connections_active", float64(n), wait)
}

// expectText waits for the next message and checks it is the text want.
func expectText(t *testing.T, c *servicetest.Client, want string) {
	t.Helper()
	m := c.Next(t, wait)
	if m.Binary || m.Data != want {
		t.Fatalf("received %q (binary %v), want text %q", m.Data, m.Binary, want)
	}
}

// errorMessage is the error message of docs/PROTOCOL.md "Error codes".
type errorMessage struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// checkErrorMessage checks that text is exactly an ErrorMessage with code.
func checkErrorMessage(t *testing.T, text, code string) {
	t.Helper()
	var e errorMessage
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Type != "error" || e.Code != code || e.Message == "" {
		t.Fatalf("got %.200q, want an ErrorMessage {\"type\":\"error\",\"code\":%q,\"message\":...}", text, code)
	}
}

// expectRefusal checks that c receives the ErrorMessage code and is then closed with closeCode.
func expectRefusal(t *testing.T, c *servicetest.Client, code string, closeCode uint16) {
	t.Helper()
	m := c.Next(t, wait)
	if m.Binary {
		t.Fatalf("got a binary message %q, want the %s ErrorMessage", m.Data, code)
	}
	checkErrorMessage(t, m.Data, code)
	if got, _ := c.WaitClose(t, wait); got != closeCode {
		t.Fatalf("closed with %d, want %d", got, closeCode)
	}
}

// expectClose checks that c is closed with code within timeout.
func expectClose(t *testing.T, c *servicetest.Client, code uint16, timeout time.Duration) {
	t.Helper()
	if got, reason := c.WaitClose(t, timeout); got != code {
		t.Fatalf("closed with %d (%q), want %d", got, reason, code)
	}
}

// stillOpen checks that c has not been closed.
func stillOpen(t *testing.T, c *servicetest.Client) {
	t.Helper()
	select {
	case <-c.Done():
		code, reason := c.WaitClose(t, time.Second)
		t.Fatalf("connection closed with %d (%q), want it open", code, reason)
	default:
	}
}

// rawConn is the raw WebSocket client (internal/wsraw), for what a well-behaved library will
// not do: stay silent, never read, send unmasked frames, or show the exact handshake.
type rawConn struct {
	*wsraw.Conn
	br   io.Reader // reads through the client's buffer
	Resp *http.Response
}

// rawOptions adjust a raw handshake.
type rawOptions struct {
	Header      http.Header
	ReceiveBuf  int // SO_RCVBUF before connecting; 0 keeps the default
	ExpectNo101 bool
}

// rawDial performs the opening handshake for path (e.g. "/ws?token=…") and returns the
// connection with the server's response. The body of a non-101 response is left unread.
func rawDial(t *testing.T, addr, path string, o rawOptions) *rawConn {
	t.Helper()
	c, err := rawHandshake(addr, path, o.Header, o.ReceiveBuf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if !o.ExpectNo101 && c.Resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(c.Resp.Body, 512))
		t.Fatalf("handshake: %s %s, want 101", c.Resp.Status, bytes.TrimSpace(body))
	}
	return c
}

// rawHandshake dials addr (with SO_RCVBUF set to receiveBuf when positive) and performs the
// opening handshake; it is safe to call off the test goroutine.
func rawHandshake(addr, path string, header http.Header, receiveBuf int) (*rawConn, error) {
	c, err := wsraw.Dial(addr, path, wsraw.Options{Header: header, ReceiveBuffer: receiveBuf, Timeout: wait})
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, br: c, Resp: c.Response}, nil
}

// rawStatus performs a handshake and returns the HTTP status and body of the answer.
func rawStatus(t *testing.T, addr, path string, header http.Header) (int, string) {
	t.Helper()
	c := rawDial(t, addr, path, rawOptions{Header: header, ExpectNo101: true})
	defer c.Close()
	if c.Resp.StatusCode == http.StatusSwitchingProtocols {
		return c.Resp.StatusCode, ""
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	body, _ := io.ReadAll(io.LimitReader(c.Resp.Body, 4096))
	return c.Resp.StatusCode, string(body)
}

// WebSocket opcodes.
const (
	opText   = rfc6455.OpText
	opBinary = rfc6455.OpBinary
	opClose  = rfc6455.OpClose
	opPing   = rfc6455.OpPing
)

// frame is one frame the server sent.
type frame = wsraw.ServerFrame

func (c *rawConn) write(t *testing.T, b []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(wait))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

// encodeFrame builds a client frame.
func encodeFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	return wsraw.Frame{Op: op, Payload: payload, More: !fin, Unmasked: !masked}.Encode()
}

// readFrame reads one server frame before deadline.
func (c *rawConn) readFrame(deadline time.Time) (frame, error) {
	return c.ReadFrame(deadline)
}

// readUntilClose reads (and never answers) frames until a close frame, the end of the
// connection or timeout; it returns every frame read, the close frame last when there was one.
func (c *rawConn) readUntilClose(timeout time.Duration) ([]frame, error) {
	return c.ReadUntilClose(time.Now().Add(timeout))
}

// lastClose returns the close code of the final frame, or 0 when the frames end without one.
func lastClose(frames []frame) uint16 {
	if len(frames) == 0 || frames[len(frames)-1].Op != opClose {
		return 0
	}
	return frames[len(frames)-1].CloseCode()
}

// subscriptions is PUBSUB CHANNELS on the node's Redis.
func (n *node) subscriptions(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	chans, err := n.rdb.PubSubChannels(ctx, "*").Result()
	if err != nil {
		t.Fatalf("PUBSUB CHANNELS: %v", err)
	}
	return chans
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}

// getURL performs a GET and returns status and body.
func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: wait}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// coderDial connects with github.com/coder/websocket, an independent client implementation.
func coderDial(t *testing.T, url string, subprotocols []string) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatalf("coder/websocket dial: %v", err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return conn, resp
}

// coderRead reads one text message.
func coderRead(t *testing.T, conn *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	typ, data, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("coder/websocket read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v message %q, want text", typ, data)
	}
	return string(data)
}

// coderEcho sends text and checks the echo.
func coderEcho(t *testing.T, conn *websocket.Conn, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		t.Fatalf("coder/websocket write: %v", err)
	}
	if got := coderRead(t, conn); got != "Echo: "+text {
		t.Fatalf("echo %q, want %q", got, "Echo: "+text)
	}
}

// coderCloseCode reads until the connection ends and returns the close code received.
func coderCloseCode(t *testing.T, conn *websocket.Conn) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i := 0; i < 100; i++ {
		_, _, err := conn.Read(ctx)
		if err != nil {
			return int(websocket.CloseStatus(err))
		}
	}
	t.Fatal("connection still delivering messages after 100 reads")
	return 0
}
