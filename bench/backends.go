package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backplanes the fleet bench runs on.
const (
	BackendRedis   = "redis"   // one redis-server
	BackendCluster = "cluster" // a Redis Cluster of clusterMasters masters, sharded Pub/Sub
)

// clusterMasters is the size of the fleet bench's Redis Cluster.
const clusterMasters = 3

// backend is a private Redis (one server or a cluster) on loopback ports.
type backend struct {
	kind  string
	nodes []*redisServer
}

// startBackend starts a single redis-server or a Redis Cluster of clusterMasters masters
// (no replicas) in dir, and waits until it serves.
func startBackend(ctx context.Context, kind, bin, dir string) (*backend, error) {
	b := &backend{kind: kind}
	switch kind {
	case BackendRedis:
		rs, err := startRedis(ctx, bin, dir)
		if err != nil {
			return nil, err
		}
		b.nodes = []*redisServer{rs}
		return b, nil
	case BackendCluster:
		if err := b.startCluster(ctx, bin, dir); err != nil {
			b.stop()
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown backend %q (want %s or %s)", kind, BackendRedis, BackendCluster)
}

func (b *backend) startCluster(ctx context.Context, bin, dir string) error {
	for range clusterMasters {
		rs, err := startRedisWith(ctx, bin, dir, func(port int) ([]string, error) {
			bus, err := freePort() // the default bus port, port+10000, may be taken or out of range
			if err != nil {
				return nil, err
			}
			return []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes-" + strconv.Itoa(port) + ".conf",
				"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000"}, nil
		})
		if err != nil {
			return err
		}
		b.nodes = append(b.nodes, rs)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return errors.New("redis-cli not found (it creates the cluster): apt-get install redis-tools")
	}
	args := append([]string{"--cluster", "create"}, b.addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	for _, n := range b.nodes {
		if err := clusterOK(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// clusterOK waits until node reports cluster_state:ok.
func clusterOK(ctx context.Context, n *redisServer) error {
	c := redis.NewClient(&redis.Options{Addr: n.addr()})
	defer c.Close()
	deadline := time.Now().Add(startWait)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		last = fmt.Sprint(info, err)
		sleep(ctx, 50*time.Millisecond)
	}
	return fmt.Errorf("redis cluster node %s not ok within %s: %s", n.addr(), startWait, last)
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (b *backend) addrs() []string {
	out := make([]string, len(b.nodes))
	for i, n := range b.nodes {
		out[i] = n.addr()
	}
	return out
}

// cluster reports whether the service and the publisher must use sharded Pub/Sub.
func (b *backend) cluster() bool { return b.kind == BackendCluster }

// url is REDIS_URL for the service and the publisher: one URL, or a comma list of seeds.
func (b *backend) url() string {
	if !b.cluster() {
		return b.nodes[0].url()
	}
	urls := make([]string, len(b.nodes))
	for i, n := range b.nodes {
		urls[i] = "redis://" + n.addr() // a cluster has no database number
	}
	return strings.Join(urls, ",")
}

func (b *backend) pids() []int {
	out := make([]int, len(b.nodes))
	for i, n := range b.nodes {
		out[i] = n.cmd.Process.Pid
	}
	return out
}

func (b *backend) stop() {
	for _, n := range b.nodes {
		n.stop()
	}
}

// nodeSet is the service processes of one fleet configuration, on one backend.
type nodeSet []*server

// startNodes starts n service processes of engine eng on b, each on its own loopback port.
func startNodes(ctx context.Context, n int, bin, eng string, b *backend, secret, apiKey, dir string) (nodeSet, error) {
	var set nodeSet
	for range n {
		s, err := startServerEnv(ctx, bin, dir, map[string]string{"ENGINE": eng, "REDIS_URL": b.url(),
			"REDIS_CLUSTER": strconv.FormatBool(b.cluster()), "JWT_SECRET_KEY": secret, "PUBLISH_API_KEY": apiKey})
		if err != nil {
			set.stop()
			return nil, err
		}
		set = append(set, s)
	}
	return set, nil
}

func (set nodeSet) urls() []string {
	out := make([]string, len(set))
	for i, s := range set {
		out[i] = "ws://" + s.addr + "/ws"
	}
	return out
}

func (set nodeSet) pids() []int {
	out := make([]int, len(set))
	for i, s := range set {
		out[i] = s.cmd.Process.Pid
	}
	return out
}

// stop stops every node (concurrently: each drains for SHUTDOWN_DRAIN_TIMEOUT).
func (set nodeSet) stop() {
	done := make(chan struct{}, len(set))
	for _, s := range set {
		go func() { s.stop(); done <- struct{}{} }()
	}
	for range set {
		<-done
	}
}

// logTails is the log tail of every node that has exited or, with all, of every node.
func (set nodeSet) logTails(all bool) string {
	var b strings.Builder
	for i, s := range set {
		if all || !s.alive() {
			fmt.Fprintf(&b, "-- node %d (%s):\n%s\n", i, s.addr, s.logTail())
		}
	}
	return b.String()
}

// workspace is a temporary directory for a run's servers and Redis, and the service binary:
// serverBin, or one built into the directory. cleanup removes the directory.
func workspace(ctx context.Context, name, serverBin string) (dir, bin string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", "wsbench-"+name+"-")
	if err != nil {
		return "", "", nil, fmt.Errorf("%s work dir: %w", name, err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	bin = serverBin
	if bin == "" {
		if bin, err = buildServer(ctx, dir); err != nil {
			cleanup()
			return "", "", nil, err
		}
	}
	return dir, bin, cleanup, nil
}

// harnessFlags are the flags every multi-process command (fleet, storm) shares.
func harnessFlags(fs *flag.FlagSet, procs *int, serverBin, redisServer, jsonOut *string) {
	fs.IntVar(procs, "procs", 0, "client processes per run (default: enough for the open-files limit, at least 2)")
	fs.StringVar(serverBin, "server-bin", "", "prebuilt websocket-service binary (default: go build ./cmd/websocket-service)")
	fs.StringVar(redisServer, "redis-server", "redis-server", "redis-server binary (redis-cli must be on PATH for the cluster)")
	fs.StringVar(jsonOut, "json-out", "", "also write every report as JSON to this file")
}
