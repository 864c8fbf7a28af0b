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
	"sync"
	"time"
)

// WorkerArg is the argument that makes wsbench a worker process of a --procs run: it reads
// its Params from stdin and talks to the parent in JSON lines.
const WorkerArg = "__worker"

// member is one process of a run as the parent drives it.
type member interface {
	// connected returns once the member's connections are open.
	connected(ctx context.Context) (int, error)
	// finish hands the go signal over and returns the member's part; its connections stay
	// open until stop, so the server's work of closing them is not charged to the delivery.
	finish(ctx context.Context, g goSignal) (Part, error)
	// stop closes the member's connections and ends it.
	stop()
}

// Run executes one scenario: it spreads the connections over p.Procs processes (this one
// when 1), does the parent's part (publishing, reading the server's memory, CPU and fds)
// between the connect phase and the local phase, and sums what every process reports.
func Run(ctx context.Context, p Params) (*Report, error) {
	return runWith(ctx, p, nil)
}

// during is work the parent does while the publisher runs (the reconnect storm kills a node
// then); it gets the time publishing started.
type during func(ctx context.Context, publishStart time.Time) error

func runWith(ctx context.Context, p Params, alongside during) (*Report, error) {
	if err := p.Normalize(); err != nil {
		return nil, err
	}
	if err := MachineCapacity().Check(peakOpen(&p), p.Procs, len(p.Src)); err != nil {
		return nil, err
	}
	pids := p.serverPIDs()
	for _, pid := range pids {
		// Connections spread round-robin over the nodes, so each holds its share (rounded up).
		if err := CheckServer(pid, (peakOpen(&p)+len(pids)-1)/len(pids)); err != nil {
			return nil, err
		}
	}
	if hint := MachineCapacity().PortHint(peakOpen(&p), len(p.Src)); hint != "" {
		logf("%s", hint)
	}
	if p.Procs > p.Conns {
		p.Procs = p.Conns
	}
	ctx, cancel := context.WithTimeout(ctx, runLimit(&p))
	defer cancel()

	var srv *ServerStats
	if len(pids) > 0 {
		before, err := readProcMems(pids)
		if err != nil {
			return nil, fmt.Errorf("server before: %w", err)
		}
		srv = &ServerStats{PID: pids[0], Before: before}
		if len(pids) > 1 {
			srv.PIDs = pids
		}
	}
	connectCPU, _ := ReadCPU(os.Getpid())
	members, err := startMembers(ctx, &p)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range members {
			m.stop()
		}
	}()
	open, err := eachConnected(ctx, members)
	if err != nil {
		return nil, err
	}
	logf("%s: %d/%d connections open", p.Scenario, open, p.Conns)
	selfCPU, _ := ReadCPU(os.Getpid())

	var g goSignal
	var pub *PublishStats
	var sampler *fdSampler
	switch p.Scenario {
	case ScenarioIdle:
		sleep(ctx, p.Hold)
	case ScenarioChurn:
		if p.PID > 0 {
			sampler = startFDSampler(p.PID)
		}
	}
	if srv != nil && p.Scenario != ScenarioChurn {
		if err := srv.connected(open, p.redisPIDs()); err != nil {
			return nil, err
		}
	}
	if p.usesPublisher() {
		st, err := publishAlongside(ctx, &p, alongside)
		if err != nil {
			return nil, err
		}
		logf("%s: published %d in %.2fs", p.Scenario, st.Published, st.Seconds)
		pub = &st
		g.PublishEndNs = st.end.UnixNano()
	}
	sum, err := eachFinished(ctx, members, g)
	if err != nil {
		return nil, err
	}
	if srv != nil && pub != nil {
		if err := srv.delivered(sum.Delivered, p.redisPIDs()); err != nil {
			return nil, err
		}
	}
	rep, err := newReport(&p, sum, pub)
	if err != nil {
		return nil, err
	}
	if now, err := ReadCPU(os.Getpid()); err == nil {
		rep.HarnessCPU = now - selfCPU + sum.HarnessCPU
	}
	rep.HarnessConnectCPU = selfCPU - connectCPU + sum.HarnessConnectCPU
	if rep.Connected > 0 && p.Scenario != ScenarioChurn {
		rep.HarnessCPUPerHandshakeUs = rep.HarnessConnectCPU * 1e6 / float64(rep.Connected)
	}
	if p.Scenario != ScenarioChurn {
		rep.Server = srv
	}
	if sampler != nil {
		for _, m := range members {
			m.stop()
		}
		before, peak, after := sampler.stop(ctx)
		rep.Churn.FDsBefore, rep.Churn.FDsPeak, rep.Churn.FDsAfter = before, peak, after
	}
	return rep, nil
}

// publishAlongside publishes the plan while alongside (when set) runs, and waits for both.
func publishAlongside(ctx context.Context, p *Params, alongside during) (PublishStats, error) {
	if alongside == nil {
		return Publish(ctx, p)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- alongside(ctx, start) }()
	st, err := Publish(ctx, p)
	return st, errors.Join(err, <-done)
}

// connected reads the server (and Redis) once every connection is open.
func (s *ServerStats) connected(open int, redisPIDs []int) error {
	after, err := readProcMems(s.pids())
	if err != nil {
		return fmt.Errorf("server after connecting: %w", err)
	}
	if s.RedisCPU, err = sumRunTime(redisPIDs); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	s.After, s.Conns = after, open
	s.ConnectCPU = after.CPUSeconds - s.Before.CPUSeconds
	if open > 0 {
		s.PssPerConnBytes = float64(after.PssKiB-s.Before.PssKiB) * 1024 / float64(open)
		s.RssPerConnBytes = float64(after.RssKiB-s.Before.RssKiB) * 1024 / float64(open)
		s.CPUPerHandshakeUs = s.ConnectCPU * 1e6 / float64(open)
	}
	return nil
}

// delivered reads the server's (and Redis's) CPU once every process has its messages.
func (s *ServerStats) delivered(n int64, redisPIDs []int) error {
	cpu, err := sumCPU(s.pids())
	if err != nil {
		return fmt.Errorf("server after delivering: %w", err)
	}
	rc, err := sumRunTime(redisPIDs)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	s.RedisCPU = rc - s.RedisCPU
	s.DeliverCPU = cpu - s.After.CPUSeconds
	if n > 0 {
		s.CPUPerDeliveryUs = s.DeliverCPU * 1e6 / float64(n)
	}
	return nil
}

// peakOpen is how many connections the run holds at once at most.
func peakOpen(p *Params) int {
	if p.Scenario == ScenarioChurn {
		return churnInFlight(p) * p.Procs
	}
	return p.Conns
}

// runLimit bounds a whole run: connecting at a pessimistic 200/s, plus every phase's own
// bound, plus a margin.
func runLimit(p *Params) time.Duration {
	return 2*time.Minute + time.Duration(p.Conns/200)*time.Second + p.Hold + p.Duration + p.Wait + p.ChurnHold
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// startMembers splits [0, Conns) into p.Procs contiguous shares.
func startMembers(ctx context.Context, p *Params) ([]member, error) {
	if p.Procs == 1 {
		s, err := newShare(p)
		if err != nil {
			return nil, err
		}
		return []member{&localMember{s: s}}, nil
	}
	var out []member
	for k := range p.Procs {
		q := *p
		q.Lo, q.Hi = p.Conns*k/p.Procs, p.Conns*(k+1)/p.Procs
		m, err := startRemote(ctx, &q, k)
		if err != nil {
			for _, o := range out {
				o.stop()
			}
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// eachMember calls do for every member concurrently and joins their errors; fold runs
// under a lock.
func eachMember[T any](members []member, do func(m member) (T, error), fold func(T) error) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := do(m)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				err = fold(v)
			}
			errs = append(errs, err)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func eachConnected(ctx context.Context, members []member) (int, error) {
	total := 0
	err := eachMember(members,
		func(m member) (int, error) { return m.connected(ctx) },
		func(n int) error { total += n; return nil })
	return total, err
}

func eachFinished(ctx context.Context, members []member, g goSignal) (Part, error) {
	var sum Part
	err := eachMember(members,
		func(m member) (Part, error) { return m.finish(ctx, g) },
		func(p Part) error { return sum.add(p) })
	return sum, err
}

// localMember runs its share in this process.
type localMember struct{ s *share }

func (m *localMember) connected(ctx context.Context) (int, error) { return m.s.connect(ctx), nil }
func (m *localMember) finish(ctx context.Context, g goSignal) (Part, error) {
	return m.s.finish(ctx, g), nil
}
func (m *localMember) stop() { m.s.close() }

// workerLine is one JSON line from a worker: first its connection count, then its part,
// or an error at any point.
type workerLine struct {
	Connected *int   `json:"connected,omitempty"`
	Part      *Part  `json:"part,omitempty"`
	Error     string `json:"error,omitempty"`
}

// maxWorkerLine bounds one line a worker prints (a part with three sparse histograms is
// well under 1 MiB).
const maxWorkerLine = 16 << 20

// remoteMember is a worker process: this executable re-run with WorkerArg.
type remoteMember struct {
	k      int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	closer io.Closer // the read end of stdout
	done   chan struct{}
}

func startRemote(ctx context.Context, p *Params, k int) (*remoteMember, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for worker processes: %w", err)
	}
	cmd := exec.Command(exe, WorkerArg)
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("worker %d stdin: %w", k, err)
	}
	// An os.Pipe of our own rather than StdoutPipe: Wait closes StdoutPipe's reader as soon
	// as the process exits, which would lose the worker's last line.
	stdout, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("worker %d stdout: %w", k, err)
	}
	cmd.Stdout = pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("start worker %d: %w", k, err)
	}
	m := &remoteMember{k: k, cmd: cmd, stdin: stdin, stdout: bufio.NewReaderSize(stdout, 64<<10), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(m.done)
	}()
	m.closer = stdout
	// Params travel on stdin, not argv, so a secret never shows in ps.
	if err := json.NewEncoder(stdin).Encode(p); err != nil {
		m.stop()
		return nil, fmt.Errorf("worker %d: send params: %w", k, err)
	}
	return m, nil
}

func (m *remoteMember) read(ctx context.Context) (workerLine, error) {
	type result struct {
		line workerLine
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		b, err := readLine(m.stdout, maxWorkerLine)
		if err != nil {
			r.err = fmt.Errorf("worker %d: %w", m.k, err)
		} else if err := json.Unmarshal(b, &r.line); err != nil {
			r.err = fmt.Errorf("worker %d: bad line: %w", m.k, err)
		} else if r.line.Error != "" {
			r.err = fmt.Errorf("worker %d: %s", m.k, r.line.Error)
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		return r.line, r.err
	case <-ctx.Done():
		m.stop()
		return workerLine{}, fmt.Errorf("worker %d: %w", m.k, ctx.Err())
	}
}

func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var out []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		out = append(out, chunk...)
		if len(out) > limit {
			return nil, fmt.Errorf("line over %d bytes", limit)
		}
		if !isPrefix {
			return out, nil
		}
	}
}

func (m *remoteMember) connected(ctx context.Context) (int, error) {
	l, err := m.read(ctx)
	if err != nil {
		return 0, err
	}
	if l.Connected == nil {
		return 0, fmt.Errorf("worker %d: expected its connection count", m.k)
	}
	return *l.Connected, nil
}

func (m *remoteMember) finish(ctx context.Context, g goSignal) (Part, error) {
	if err := json.NewEncoder(m.stdin).Encode(g); err != nil {
		return Part{}, fmt.Errorf("worker %d: send go: %w", m.k, err)
	}
	l, err := m.read(ctx)
	if err != nil {
		return Part{}, err
	}
	if l.Part == nil {
		return Part{}, fmt.Errorf("worker %d: expected its part", m.k)
	}
	return *l.Part, nil
}

// stop closes the worker's stdin, on which it closes its connections and exits; a worker
// that has not exited in time is killed.
func (m *remoteMember) stop() {
	_ = m.stdin.Close()
	select {
	case <-m.done:
		_ = m.closer.Close()
		return
	case <-time.After(closeWait + 2*time.Second):
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	_ = m.closer.Close()
}

// Worker is the body of a worker process: Params on in, then the go signal; JSON lines on
// out. It returns when its part is written or in is closed.
func Worker(ctx context.Context, in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	fail := func(err error) error {
		_ = enc.Encode(workerLine{Error: err.Error()})
		return err
	}
	var p Params
	if err := dec.Decode(&p); err != nil {
		return fail(fmt.Errorf("read params: %w", err))
	}
	s, err := newShare(&p)
	if err != nil {
		return fail(err)
	}
	start, _ := ReadCPU(os.Getpid())
	n := s.connect(ctx)
	cpu0, _ := ReadCPU(os.Getpid())
	if err := enc.Encode(workerLine{Connected: &n}); err != nil {
		return fmt.Errorf("report connected: %w", err)
	}
	var g goSignal
	if err := dec.Decode(&g); err != nil {
		// The parent went away: close what we hold and leave.
		s.close()
		return fmt.Errorf("read go signal: %w", err)
	}
	part := s.finish(ctx, g)
	if cpu1, err := ReadCPU(os.Getpid()); err == nil {
		part.HarnessCPU = cpu1 - cpu0
	}
	part.HarnessConnectCPU = cpu0 - start
	defer s.close()
	if err := enc.Encode(workerLine{Part: &part}); err != nil {
		return fmt.Errorf("report part: %w", err)
	}
	// Hold the connections until the parent has read what it needs and closes stdin.
	_, _ = io.Copy(io.Discard, in)
	return nil
}

// fdSampler follows the server's fd count during churn.
type fdSampler struct {
	pid    int
	before int
	peak   int
	quit   chan struct{}
	done   chan struct{}
}

// fdSettle bounds how long the sampler waits, after churn ends, for the server's fd count
// to come back to where it started.
const fdSettle = 10 * time.Second

func startFDSampler(pid int) *fdSampler {
	s := &fdSampler{pid: pid, quit: make(chan struct{}), done: make(chan struct{})}
	s.before, _ = CountFDs(pid)
	s.peak = s.before
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				if n, err := CountFDs(pid); err == nil && n > s.peak {
					s.peak = n
				}
			}
		}
	}()
	return s
}

// stop ends sampling and waits (bounded) for the fd count to return to its starting value,
// so a leak shows as after > before.
func (s *fdSampler) stop(ctx context.Context) (before, peak, after int) {
	close(s.quit)
	<-s.done
	deadline := time.Now().Add(fdSettle)
	for {
		after, _ = CountFDs(s.pid)
		if after <= s.before || time.Now().After(deadline) || ctx.Err() != nil {
			return s.before, s.peak, after
		}
		sleep(ctx, 200*time.Millisecond)
	}
}
