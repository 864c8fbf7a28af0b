package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/internal/otlpsink"
)

// SuiteOptions configure `wsbench suite`.
type SuiteOptions struct {
	Full        bool
	Engines     []string // in the order of the first scenario; later scenarios alternate
	ServerBin   string   // prebuilt server; empty: build ./cmd/websocket-service
	RedisServer string   // redis-server binary
	JSONOut     string   // also write every report here
	Only        []string // run only these scenario steps (by name)
	Rounds      int      // times every step runs on every engine
	// Protocol is the clients' protocol in the group fan-out (classroom) steps: "v1" (the
	// default: as before), "v2", or "both" (each such step twice, v1 and v2 clients, both
	// published with FCALL ws_publish, so only the protocol differs; see protocolSteps).
	Protocol string
	// steps replaces the standard steps (tests run a small one).
	steps []step
}

// step is one scenario of the suite, run once per engine.
type step struct {
	name   string // row label prefix in the table
	params Params
}

// steps returns the suite's scenarios. Quick fits a few minutes on two cores; full is the
// sizing run (19,000 idle connections, a 10,000-member group fan-out).
func steps(full bool) []step {
	// Four loopback source addresses keep each one's ephemeral ports mostly free: past about
	// half of a source's range in use (TIME_WAIT included), the kernel's search for a free
	// port made each connect cost the harness ~400 µs of CPU instead of ~75.
	base := Params{Concurrency: 64, Wait: 30 * time.Second, Quiet: 3 * time.Second, Pipeline: 256,
		Src: []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}}
	with := func(f func(p *Params)) Params {
		p := base
		f(&p)
		return p
	}
	if !full {
		return []step{
			// memory per connection, handshakes/s, server CPU per handshake
			{"idle", with(func(p *Params) { p.Scenario, p.Conns, p.Hold = ScenarioIdle, 10000, 2*time.Second })},
			// 30 messages to each of 10,000 users
			{"fanout", with(func(p *Params) { p.Scenario, p.Conns, p.Messages = ScenarioFanout, 10000, 300000 })},
			// latency at a load both engines carry: 50,000 messages/s to 10,000 users for 2 s
			{"fanout-paced", with(func(p *Params) {
				p.Scenario, p.Conns, p.Messages, p.PublishRate = ScenarioFanout, 10000, 100000, 50000
			})},
			// 20 classes of 500, 30 publishes each
			{"classroom", with(func(p *Params) { p.Scenario, p.Groups, p.Size, p.Repeat = ScenarioClassroom, 20, 500, 30 })},
			// 30 broadcasts to 10,000
			{"broadcast", with(func(p *Params) { p.Scenario, p.Conns, p.Repeat = ScenarioBroadcast, 10000, 30 })},
		}
	}
	return []step{
		{"idle", with(func(p *Params) { p.Scenario, p.Conns, p.Hold, p.Procs = ScenarioIdle, 19000, 5*time.Second, 2 })},
		{"fanout", with(func(p *Params) { p.Scenario, p.Conns, p.Messages = ScenarioFanout, 10000, 200000 })},
		{"fanout-paced", with(func(p *Params) {
			p.Scenario, p.Conns, p.Messages, p.PublishRate = ScenarioFanout, 10000, 250000, 50000
		})},
		{"classroom", with(func(p *Params) { p.Scenario, p.Groups, p.Size, p.Repeat = ScenarioClassroom, 1, 10000, 100 })},
		{"classroom-paced", with(func(p *Params) {
			p.Scenario, p.Groups, p.Size, p.Repeat, p.PublishRate = ScenarioClassroom, 1, 10000, 20, 4
		})},
		{"broadcast", with(func(p *Params) { p.Scenario, p.Conns, p.Repeat = ScenarioBroadcast, 10000, 20 })},
		{"churn", with(func(p *Params) {
			p.Scenario, p.Conns, p.Rate, p.Duration, p.ChurnHold = ScenarioChurn, 2000, 500, 15*time.Second, 200*time.Millisecond
		})},
		{"echo", with(func(p *Params) { p.Scenario, p.Conns, p.Duration = ScenarioEcho, 1000, 10*time.Second })},
	}
}

// SuiteResult is every report of a suite run, by step and engine.
type SuiteResult struct {
	Date    string                          `json:"date"`
	Mode    string                          `json:"mode"`
	Rounds  int                             `json:"rounds"`
	Engines []string                        `json:"engines"`
	Steps   []string                        `json:"steps"`
	Reports map[string]map[string][]*Report `json:"reports"` // step → engine → one per round
	// Protocol is SuiteOptions.Protocol ("" for v1).
	Protocol string `json:"protocol,omitempty"`
}

// RunSuite builds and starts what it needs, runs every step against every engine
// (alternating which engine goes first), and returns the reports. progress gets each
// report as it completes.
func RunSuite(ctx context.Context, o SuiteOptions, progress io.Writer) (*SuiteResult, error) {
	work, bin, cleanup, err := workspace(ctx, "suite", o.ServerBin)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	rs, err := startRedis(ctx, o.RedisServer, work)
	if err != nil {
		return nil, err
	}
	defer rs.stop()

	mode := "quick"
	if o.Full {
		mode = "full"
	}
	rounds := max(o.Rounds, 1)
	res := &SuiteResult{Date: time.Now().UTC().Format(time.RFC3339), Mode: mode, Rounds: rounds, Engines: o.Engines,
		Reports: map[string]map[string][]*Report{}}
	secret, apiKey := randomHex(32), randomHex(16)
	all := o.steps
	if all == nil {
		all = steps(o.Full)
	}
	if all, err = protocolSteps(all, o.Protocol); err != nil {
		return nil, err
	}
	res.Protocol = o.Protocol
	var names []string
	for _, st := range all {
		names = append(names, st.name)
		if len(o.Only) == 0 || contains(o.Only, st.name) {
			res.Steps = append(res.Steps, st.name)
			res.Reports[st.name] = map[string][]*Report{}
		}
	}
	for _, name := range o.Only {
		if !contains(names, name) {
			// A misspelt or renamed step would otherwise run nothing and report success.
			return nil, fmt.Errorf("--only %s: no such step (this suite has %s)", name, strings.Join(names, ","))
		}
	}
	turn := 0
	for round := 1; round <= rounds; round++ {
		for _, st := range all {
			if res.Reports[st.name] == nil {
				continue
			}
			order := slices.Clone(o.Engines)
			if turn%2 == 1 {
				// Alternate who goes first, so neither engine always runs on a warmer machine.
				slices.Reverse(order)
			}
			turn++
			for _, eng := range order {
				fmt.Fprintf(progress, "-- round %d/%d: %s on %s\n", round, rounds, st.name, eng)
				rep, err := runStep(ctx, st, eng, bin, rs, secret, apiKey, work)
				if err != nil {
					return res, fmt.Errorf("%s on %s: %w", st.name, eng, err)
				}
				res.Reports[st.name][eng] = append(res.Reports[st.name][eng], rep)
				rep.Write(progress)
				fmt.Fprintln(progress)
			}
		}
	}
	return res, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runStep starts a fresh server of engine eng (so memory figures start from an empty
// process), runs the step against it and stops it.
func runStep(ctx context.Context, st step, eng, bin string, rs *redisServer, secret, apiKey, work string) (*Report, error) {
	srv, err := startServer(ctx, bin, eng, rs.url(), secret, apiKey, work)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	p := st.params
	p.Label = eng
	p.URL = "ws://" + srv.addr + "/ws"
	p.APIURL, p.APIKey = "http://"+srv.addr+"/api/publish", apiKey
	if p.PublishVia == "" {
		p.PublishVia = "redis"
	}
	p.RedisURL = rs.url()
	p.Tokens = TokenOptions{Secret: secret, TTL: time.Hour}
	p.PID, p.RedisPID = srv.cmd.Process.Pid, rs.cmd.Process.Pid
	p.Run = st.name[:1] + eng[:1] + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	rep, err := Run(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, srv.logTail())
	}
	if !srv.alive() {
		return rep, fmt.Errorf("server (%s) exited during the run:\n%s", eng, srv.logTail())
	}
	return rep, nil
}

// moduleRoot finds the directory of this module's go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for range 32 {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/huleedu/websocket-service")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("run the suite inside the websocket-service module, or pass --server-bin")
}

// buildServer compiles cmd/websocket-service into dir.
func buildServer(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "websocket-service")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/websocket-service")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build server: %w\n%s", err, b)
	}
	return out, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startWait bounds how long a child (server, redis) may take to become ready.
const startWait = 20 * time.Second

// proc is a child process with its output captured.
type proc struct {
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	p := &proc{cmd: cmd, out: &tailBuffer{limit: 16 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, and SIGKILL if the process has not exited within 10s.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) logTail() string { return p.out.String() }

// redisServer is the suite's private redis-server on a free loopback port (never the
// system one on 6379).
type redisServer struct {
	*proc
	port int
	argv []string // how it was started, for restart
}

func (r *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func startRedis(ctx context.Context, bin, dir string) (*redisServer, error) {
	return startRedisWith(ctx, bin, dir, nil)
}

// startRedisWith starts redis-server with extra arguments chosen once its port is known
// (extra may be nil).
func startRedisWith(ctx context.Context, bin, dir string, extra func(port int) ([]string, error)) (*redisServer, error) {
	path, err := lookRedis(bin)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // a port found free may be taken before redis binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"}
		if extra != nil {
			more, err := extra(port)
			if err != nil {
				return nil, err
			}
			args = append(args, more...)
		}
		p, err := startProc(exec.Command(path, args...))
		if err != nil {
			return nil, err
		}
		rs := &redisServer{proc: p, port: port, argv: append([]string{path}, args...)}
		if lastErr = rs.waitReady(ctx); lastErr == nil {
			return rs, nil
		}
		p.stop()
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// lookRedis finds the redis-server binary (name, or "redis-server" when empty).
func lookRedis(name ...string) (string, error) {
	bin := "redis-server"
	if len(name) > 0 && name[0] != "" {
		bin = name[0]
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s not found: apt-get install redis-server", bin)
	}
	return path, nil
}

func (r *redisServer) waitReady(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port)})
	defer c.Close()
	deadline := time.Now().Add(startWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !r.alive() {
			return fmt.Errorf("redis-server exited: %s", r.logTail())
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return fmt.Errorf("redis-server on port %d did not answer PING within %s", r.port, startWait)
}

// server is one websocket-service process.
type server struct {
	*proc
	addr string
}

// startServer runs the service with engine eng, the suite's Redis, no per-user limit (the
// suite's identities are distinct anyway), no inbound rate limit (the echo step's back-to-back
// round trips run at 100-140 a second per connection, above the default limit: the step
// measures the echo path, not the policy) and quiet logs, and waits for /readyz.
func startServer(ctx context.Context, bin, eng, redisURL, secret, apiKey, dir string) (*server, error) {
	return startServerEnv(ctx, bin, dir, map[string]string{"ENGINE": eng, "REDIS_URL": redisURL,
		"JWT_SECRET_KEY": secret, "PUBLISH_API_KEY": apiKey})
}

// startServerEnv starts the service with the suite's fixed settings plus vars (named
// without the prefix; they win), on a free loopback port, and waits for /readyz.
func startServerEnv(ctx context.Context, bin, dir string, vars map[string]string) (*server, error) {
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin)
		cmd.Dir = dir // no stray .env file is read
		env := map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(port), "MAX_CONNECTIONS_PER_USER": "0",
			"LOG_LEVEL": "WARNING", "ALLOWED_ORIGINS": "*", "SHUTDOWN_DRAIN_TIMEOUT": "1", "INBOUND_RATE_PER_CONNECTION": "0"}
		maps.Copy(env, vars)
		cmd.Env = serverEnv(env)
		p, err := startProc(cmd)
		if err != nil {
			return nil, err
		}
		s := &server{proc: p, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if lastErr = s.waitReady(ctx); lastErr == nil {
			return s, nil
		}
		p.stop()
	}
	return nil, lastErr
}

// serverEnv is this process's environment without any WEBSOCKET_SERVICE_ variable, plus vars
// (named without the prefix).
func serverEnv(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WEBSOCKET_SERVICE_") {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		env = append(env, "WEBSOCKET_SERVICE_"+k+"="+v)
	}
	return env
}

func (s *server) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startWait)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !s.alive() {
			return fmt.Errorf("server exited at start:\n%s", s.logTail())
		}
		resp, err := client.Get("http://" + s.addr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s %s", resp.Status, bytes.TrimSpace(b))
		} else {
			last = err.Error()
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return fmt.Errorf("server on %s not ready within %s (last: %s):\n%s", s.addr, startWait, last, s.logTail())
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	b     []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.limit; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// runSuiteCommand is `wsbench suite`.
func runSuiteCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o SuiteOptions
	var quick bool
	var engines, only string
	fs.BoolVar(&quick, "quick", false, "the short standard suite (default)")
	fs.BoolVar(&o.Full, "full", false, "the long suite: 19,000 idle connections, 10,000-member group fan-out, churn, echo")
	fs.StringVar(&engines, "engines", "gws,epoll", "engines to compare; the first is the baseline of the ratios")
	fs.StringVar(&o.ServerBin, "server-bin", "", "prebuilt websocket-service binary (default: go build ./cmd/websocket-service)")
	fs.StringVar(&o.RedisServer, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&o.JSONOut, "json-out", "", "also write every report as JSON to this file")
	fs.StringVar(&only, "only", "", "run only these steps (comma-separated: idle,fanout,…)")
	fs.StringVar(&o.Protocol, "protocol", ProtocolV1, "clients of the group fan-out (classroom) steps: v1, v2, or both (side by side, both published with FCALL ws_publish)")
	fs.IntVar(&o.Rounds, "rounds", 0, "times each step runs on each engine (default: 3 quick, 1 full)")
	otlpSink := fs.Bool("otlp-sink", false, "trace the servers: start an in-process OTLP/HTTP receiver and point their "+
		"OTEL_EXPORTER_OTLP_ENDPOINT at it (choose sampling with OTEL_TRACES_SAMPLER[_ARG] in the environment)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *otlpSink {
		sink, err := startOTLPSink()
		if err != nil {
			fmt.Fprintf(stderr, "wsbench suite: %v\n", err)
			return 2
		}
		defer func() {
			fmt.Fprintf(stderr, "wsbench suite: the OTLP sink received %d spans\n", sink.Count())
			_ = sink.Close()
		}()
	}
	if quick && o.Full {
		fmt.Fprintln(stderr, "wsbench suite: --quick or --full, not both")
		return 2
	}
	o.Engines = strings.Split(engines, ",")
	if o.Rounds <= 0 {
		o.Rounds = 3
		if o.Full {
			o.Rounds = 1
		}
	}
	if only != "" {
		o.Only = strings.Split(only, ",")
	}
	res, err := RunSuite(ctx, o, stderr)
	if res != nil && len(res.Steps) > 0 {
		WriteTable(stdout, res)
		writeJSON(o.JSONOut, res, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbench suite: %v\n", err)
		return 2
	}
	for _, byEngine := range res.Reports {
		for _, reps := range byEngine {
			for _, r := range reps {
				if len(r.Problems) > 0 {
					return 1
				}
			}
		}
	}
	return 0
}

// startOTLPSink starts a span receiver that counts and discards, and sets
// OTEL_EXPORTER_OTLP_ENDPOINT (and the http/protobuf protocol) in this process's environment,
// which every server the suite starts inherits (serverEnv).
func startOTLPSink() (*otlpsink.Sink, error) {
	sink, err := otlpsink.Start(false)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": sink.Endpoint(), "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"} {
		if err := os.Setenv(k, v); err != nil {
			_ = sink.Close()
			return nil, fmt.Errorf("set %s: %w", k, err)
		}
	}
	return sink, nil
}
