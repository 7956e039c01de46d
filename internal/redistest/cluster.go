package redistest

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Cluster is a running Redis Cluster of three masters, no replicas.
type Cluster struct {
	t     T
	Nodes []*Server
}

// StartCluster starts three cluster-enabled redis-servers, joins them with
// redis-cli --cluster create (the slots split in three) and waits until
// every node reports cluster_state:ok. Without redis-server or redis-cli the
// test is skipped, or fails when MTR_REQUIRE_REDIS=1.
func StartCluster(t T) *Cluster {
	t.Helper()
	need(t, "redis-server", "redis-cli")
	c := &Cluster{t: t}
	for range 3 {
		c.Nodes = append(c.Nodes, start(t, func(s *Server) []string {
			return []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
				"--cluster-port", strconv.Itoa(FreePort(t)), "--cluster-node-timeout", "5000"}
		}))
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil { //nolint:gosec // fixed arguments, loopback addresses
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		var info string
		for deadline := time.Now().Add(startTimeout); ; time.Sleep(50 * time.Millisecond) {
			r, err := n.Do("CLUSTER", "INFO")
			if err == nil {
				info = r.Str
				if r.Field("cluster_state") == "ok" && r.Field("cluster_known_nodes") == "3" && r.Field("cluster_slots_ok") == "16384" {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s did not settle: %v\n%s", n.Addr, err, info)
			}
		}
	}
	return c
}

// Addrs are the nodes' addresses.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr
	}
	return a
}

// URL is the --redis-url of the cluster, every node a seed.
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs(), ",") }

// Keys returns how many keys each node holds.
func (c *Cluster) Keys() []int64 {
	c.t.Helper()
	out := make([]int64, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.MustDo("DBSIZE").Int
	}
	return out
}

// Get reads key from whichever node holds its slot.
func (c *Cluster) Get(key string) Reply {
	c.t.Helper()
	slot := c.Nodes[0].MustDo("CLUSTER", "KEYSLOT", key).Int
	for _, n := range c.Nodes {
		if n.MustDo("CLUSTER", "COUNTKEYSINSLOT", strconv.FormatInt(slot, 10)).Int > 0 {
			return n.MustDo("GET", key)
		}
	}
	return Reply{Nil: true}
}
