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
	c.WaitOK()
	return c
}

// WaitOK waits until every node reports cluster_state:ok, all three nodes
// known and every slot served: after StartCluster, or after a node was
// restarted (it keeps its nodes.conf, so it rejoins with its slots, empty).
func (c *Cluster) WaitOK() {
	c.t.Helper()
	t := c.t
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

// NodeOf returns the node that serves key's slot.
func (c *Cluster) NodeOf(key string) *Server {
	c.t.Helper()
	r := c.Nodes[0].MustDo("CLUSTER", "SHARDS")
	slot := c.Nodes[0].MustDo("CLUSTER", "KEYSLOT", key).Int
	// CLUSTER SHARDS: per shard, "slots" [start, end, ...] and "nodes"
	// [{"port": ..., "role": ...}, ...].
	for _, shard := range r.Arr {
		var slots, nodes []Reply
		for i := 0; i+1 < len(shard.Arr); i += 2 {
			switch shard.Arr[i].Str {
			case "slots":
				slots = shard.Arr[i+1].Arr
			case "nodes":
				nodes = shard.Arr[i+1].Arr
			}
		}
		for i := 0; i+1 < len(slots); i += 2 {
			if slots[i].Int <= slot && slot <= slots[i+1].Int {
				for _, nd := range nodes {
					m := map[string]Reply{}
					for j := 0; j+1 < len(nd.Arr); j += 2 {
						m[nd.Arr[j].Str] = nd.Arr[j+1]
					}
					for _, n := range c.Nodes {
						if m["role"].Str == "master" && m["port"].Int == int64(n.Port) {
							return n
						}
					}
				}
			}
		}
	}
	c.t.Fatalf("no node serves the slot of %q", key)
	return nil
}

// Get reads key from the node that serves its slot.
func (c *Cluster) Get(key string) Reply {
	c.t.Helper()
	return c.NodeOf(key).MustDo("GET", key)
}
