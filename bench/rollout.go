package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// RolloutOptions configure `wsbench rollout`: Clients reference clients (client/, driven by
// Driver) connect to node A of two service processes on one Redis while a publisher sends
// numbered messages to each user, each group and everyone; node A is drained (SIGTERM) and
// the clients resume on node B. With RestartRedis, Redis is restarted without persistence
// while the clients are on A, so every stream's history is lost once.
type RolloutOptions struct {
	Clients      int
	GroupSize    int           // members per group
	Engine       string        // of both nodes
	Drain        time.Duration // node A's SHUTDOWN_DRAIN_TIMEOUT (whole seconds)
	RoundEvery   time.Duration // the publisher's period: each round, a message to every group and to everyone
	UserEvery    int           // and to each user every this many rounds
	RoundsBefore int           // rounds before the drain (the Redis restart, if any, is half-way)
	RoundsAfter  int           // rounds after every client resumed
	RestartRedis bool
	// ClientOptions go to every NotificationsClient (initialDelayMs, maxDelayMs, …).
	ClientOptions map[string]any
	// Driver is the command that runs the clients and speaks bench/rollout.mjs's protocol;
	// the config file's path is appended. Default: node bench/rollout.mjs.
	Driver      []string
	Timeout     time.Duration // bound of each wait (first syncs, resume, final delivery)
	ServerBin   string
	RedisServer string
}

// RolloutResult is one rollout.
type RolloutResult struct {
	Date         string  `json:"date"`
	Engine       string  `json:"engine"`
	Clients      int     `json:"clients"`
	RestartRedis bool    `json:"restart_redis"`
	ReadySeconds float64 `json:"ready_seconds"` // from starting the clients to every first sync
	// ResumeAllMs etc. are from the drain (just before SIGTERM) to each client's sync of
	// every stream on its new connection.
	ResumeAllMs float64 `json:"resume_all_ms"`
	ResumeP50Ms float64 `json:"resume_p50_ms"`
	ResumeP99Ms float64 `json:"resume_p99_ms"`
	// AExitSeconds is from SIGTERM until node A exited.
	AExitSeconds  float64        `json:"a_exit_seconds"`
	Published     int64          `json:"published"`
	PublishErrors int64          `json:"publish_errors"` // retried with the same number next round
	Report        *RolloutReport `json:"report"`
	Problems      []string       `json:"problems"`
}

// RolloutReport is what the clients saw (bench/rollout-clients.mjs), over every stream of
// every client.
type RolloutReport struct {
	Clients         int            `json:"clients"`
	Streams         int            `json:"streams"`
	Exact           int            `json:"exact"` // streams that got 1..last exactly once, in order, nothing lost
	Expected        int64          `json:"expected"`
	Received        int64          `json:"received"`
	Replayed        int64          `json:"replayed"`
	Duplicates      int64          `json:"duplicates"`
	OutOfOrder      int64          `json:"outOfOrder"`
	Covered         int64          `json:"covered"` // lost, and the app was told (sync recovered:false)
	Silent          int64          `json:"silent"`  // lost without a word
	RecoveredFalse  int            `json:"recoveredFalse"`
	StreamsWithLoss int            `json:"streamsWithLoss"`
	Reasons         map[string]int `json:"reasons"`
	Errors          map[string]int `json:"errors"`
	TimedOut        *string        `json:"timedOut"`
	Problems        []string       `json:"problems"`
	UserAgent       string         `json:"userAgent,omitempty"` // the browser's, when the clients ran in one
}

func (o *RolloutOptions) defaults() {
	if o.GroupSize <= 0 {
		o.GroupSize = 10
	}
	if o.Drain <= 0 {
		o.Drain = 2 * time.Second
	}
	if o.RoundEvery <= 0 {
		o.RoundEvery = 100 * time.Millisecond
	}
	if o.UserEvery <= 0 {
		o.UserEvery = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
}

// RunRollout runs one rollout.
func RunRollout(ctx context.Context, o RolloutOptions, progress io.Writer) (*RolloutResult, error) {
	o.defaults()
	if o.Clients <= 0 || o.RoundsBefore <= 0 || o.RoundsAfter <= 0 {
		return nil, fmt.Errorf("rollout: clients %d, rounds before %d and after %d must all be positive", o.Clients, o.RoundsBefore, o.RoundsAfter)
	}
	work, bin, cleanup, err := workspace(ctx, "rollout", o.ServerBin)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	rs, err := startRedis(ctx, o.RedisServer, work)
	if err != nil {
		return nil, err
	}
	defer func() { rs.stop() }()
	secret, apiKey := randomHex(32), randomHex(16)
	vars := map[string]string{"ENGINE": o.Engine, "REDIS_URL": rs.url(), "JWT_SECRET_KEY": secret, "PUBLISH_API_KEY": apiKey,
		"SHUTDOWN_DRAIN_TIMEOUT": strconv.Itoa(max(1, int(o.Drain/time.Second)))}
	a, err := startServerEnv(ctx, bin, work, vars)
	if err != nil {
		return nil, fmt.Errorf("node A: %w", err)
	}
	defer a.stop()
	b, err := startServerEnv(ctx, bin, work, vars)
	if err != nil {
		return nil, fmt.Errorf("node B: %w", err)
	}
	defer b.stop()
	res := &RolloutResult{Date: time.Now().UTC().Format(time.RFC3339), Engine: o.Engine, Clients: o.Clients, RestartRedis: o.RestartRedis}
	fmt.Fprintf(progress, "-- rollout on %s: %d clients on node A %s, node B %s, redis %s\n", o.Engine, o.Clients, a.addr, b.addr, rs.url())

	plan, err := newRolloutPlan(o, secret)
	if err != nil {
		return nil, err
	}
	drv, err := startDriver(ctx, o, plan, []string{"ws://" + a.addr + "/ws", "ws://" + b.addr + "/ws"}, work)
	if err != nil {
		return nil, err
	}
	defer drv.stop()
	var ready struct{ Ms float64 }
	if err := drv.await("ready", &ready); err != nil {
		return nil, err
	}
	res.ReadySeconds = ready.Ms / 1000
	fmt.Fprintf(progress, "-- every client synced every stream in %.2fs; publishing\n", res.ReadySeconds)

	pub, err := newRolloutPublisher(rs, plan, o)
	if err != nil {
		return nil, err
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubDone := make(chan error, 1)
	var pubRunning sync.WaitGroup
	pubRunning.Add(1)
	go func() {
		defer pubRunning.Done()
		pubDone <- pub.run(pubCtx)
	}()
	// Redis is stopped (deferred above) only after the publisher, which may restart it, returned.
	defer func() { stopPub(); pubRunning.Wait() }()
	if err := pub.awaitRound(ctx, pubDone, o.RoundsBefore); err != nil {
		return nil, err
	}

	if err := drv.send(map[string]any{"cmd": "drain"}); err != nil {
		return nil, err
	}
	if err := drv.await("draining", nil); err != nil {
		return nil, err
	}
	sigterm := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("SIGTERM node A: %w", err)
	}
	fmt.Fprintf(progress, "-- node A drained (SIGTERM) after %d rounds\n", o.RoundsBefore)
	var resumed struct{ AllMs, P50Ms, P99Ms float64 }
	if err := drv.await("resumed", &resumed); err != nil {
		return nil, err
	}
	res.ResumeAllMs, res.ResumeP50Ms, res.ResumeP99Ms = resumed.AllMs, resumed.P50Ms, resumed.P99Ms
	select {
	case <-a.done:
		res.AExitSeconds = time.Since(sigterm).Seconds()
	case <-time.After(o.Drain + o.Timeout):
		res.Problems = append(res.Problems, fmt.Sprintf("node A still running %s after SIGTERM", o.Drain+o.Timeout))
	}
	if a.cmd.ProcessState != nil && !a.cmd.ProcessState.Success() {
		res.Problems = append(res.Problems, fmt.Sprintf("node A exited with %s:\n%s", a.cmd.ProcessState, a.logTail()))
	}
	fmt.Fprintf(progress, "-- every client resumed within %.0f ms (p50 %.0f, p99 %.0f); node A exited after %.2fs\n",
		res.ResumeAllMs, res.ResumeP50Ms, res.ResumeP99Ms, res.AExitSeconds)
	if err := pub.awaitRound(ctx, pubDone, pub.round()+o.RoundsAfter); err != nil {
		return nil, err
	}
	stopPub()
	if err := <-pubDone; err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	res.Published, res.PublishErrors = pub.published, pub.errors
	if err := drv.send(map[string]any{"cmd": "finish", "expect": pub.expect()}); err != nil {
		return nil, err
	}
	var rep struct{ Report *RolloutReport }
	if err := drv.await("report", &rep); err != nil {
		return nil, err
	}
	res.Report = rep.Report
	res.Problems = append(res.Problems, rep.Report.problems(o.RestartRedis)...)
	return res, nil
}

// problems is the verdict on what the clients saw: every stream exactly once and in order;
// after a Redis restart, every stream told of its loss (reason epoch) and nothing lost
// silently.
func (r *RolloutReport) problems(restart bool) []string {
	var out []string
	if r.TimedOut != nil {
		out = append(out, "not every message arrived: "+*r.TimedOut)
	}
	if r.Duplicates > 0 || r.OutOfOrder > 0 || r.Silent > 0 {
		out = append(out, fmt.Sprintf("%d duplicates, %d out of order, %d lost silently", r.Duplicates, r.OutOfOrder, r.Silent))
	}
	if !restart && (r.Exact != r.Streams || r.RecoveredFalse > 0) {
		out = append(out, fmt.Sprintf("%d of %d streams exactly once in order; %d recovered:false %v", r.Exact, r.Streams, r.RecoveredFalse, r.Reasons))
	}
	if restart && (r.StreamsWithLoss != r.Streams || r.Reasons["epoch"] < r.Streams) {
		out = append(out, fmt.Sprintf("after the Redis restart %d of %d streams reported recovered:false (reasons %v), want every one with reason epoch",
			r.StreamsWithLoss, r.Streams, r.Reasons))
	}
	for _, p := range r.Problems {
		out = append(out, "client: "+p)
	}
	return out
}

// driver is the process that runs the clients.
type driver struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	wait   time.Duration
	done   chan struct{}
}

func startDriver(ctx context.Context, o RolloutOptions, plan *rolloutPlan, urls []string, dir string) (*driver, error) {
	argv := o.Driver
	if len(argv) == 0 {
		var err error
		if argv, err = nodeDriver(); err != nil {
			return nil, err
		}
	}
	cfg, err := json.Marshal(map[string]any{"urls": urls, "clients": plan.clients, "clientOptions": o.ClientOptions,
		"timeoutMs": o.Timeout.Milliseconds()})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "rollout-clients.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("rollout driver config: %w", err)
	}
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], path)...)
	cmd.WaitDelay = 5 * time.Second
	d := &driver{cmd: cmd, lines: make(chan string, 16), stderr: &tailBuffer{limit: 16 << 10}, wait: o.Timeout + 30*time.Second, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	if d.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start rollout driver %v: %w", argv, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
		_ = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// nodeDriver is node running bench/rollout.mjs, with --experimental-websocket where Node
// has no global WebSocket without it (Node 20).
func nodeDriver() ([]string, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errors.New("node not found: apt-get install nodejs")
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	script := filepath.Join(root, "bench", "rollout.mjs")
	out, err := exec.Command(node, "-e", "process.stdout.write(typeof WebSocket)").Output()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if string(out) == "function" {
		return []string{node, script}, nil
	}
	return []string{node, "--experimental-websocket", "--no-warnings", script}, nil
}

func (d *driver) send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if _, err := d.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("rollout driver: send %v: %w (stderr: %s)", cmd["cmd"], err, d.stderr.String())
	}
	return nil
}

// await reads the driver's events until event, decoding it into into (when not nil).
func (d *driver) await(event string, into any) error {
	timer := time.NewTimer(d.wait)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-d.lines:
			if !ok {
				return fmt.Errorf("rollout driver exited while waiting for %q (stderr: %s)", event, d.stderr.String())
			}
			var head struct{ Event, Error string }
			if err := json.Unmarshal([]byte(line), &head); err != nil {
				return fmt.Errorf("rollout driver said %q: %w", line, err)
			}
			if head.Event == "error" {
				return fmt.Errorf("rollout driver failed waiting for %q: %s (stderr: %s)", event, head.Error, d.stderr.String())
			}
			if head.Event != event {
				continue
			}
			if into == nil {
				return nil
			}
			return json.Unmarshal([]byte(line), into)
		case <-timer.C:
			return fmt.Errorf("rollout driver: no %q within %s (stderr: %s)", event, d.wait, d.stderr.String())
		}
	}
}

func (d *driver) stop() {
	_ = d.in.Close()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}
