package redistest

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of masters without replicas, owned by a test.
type Cluster struct {
	Nodes []*Server
}

// StartCluster launches n (at least 3) cluster-enabled masters on free ports, joins them with
// `redis-cli --cluster create` and waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("redistest: a cluster needs at least 3 masters, asked for %d", n)
	}
	cli := binary(t, "redis-cli")
	c := &Cluster{}
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, start(t, clusterArgs(t)))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(waitLimit)
	for _, node := range c.Nodes {
		for {
			info, err := command(node.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: node %s not cluster_state:ok within %s (err %v):\n%s", node.Addr(), waitLimit, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// clusterArgs enables cluster mode with a bus port chosen freely too (the default, port+10000,
// may be taken or out of range).
func clusterArgs(t testing.TB) func(port int) []string {
	return func(port int) []string {
		bus, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free cluster bus port: %v", err)
		}
		return []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes-" + strconv.Itoa(port) + ".conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", "5000",
		}
	}
}

// Addrs lists the nodes' "127.0.0.1:port" addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// URL is "redis://127.0.0.1:p1,redis://127.0.0.1:p2,...", the form config accepts with
// REDIS_CLUSTER=true.
func (c *Cluster) URL() string {
	parts := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		parts[i] = "redis://" + n.Addr()
	}
	return strings.Join(parts, ",")
}
