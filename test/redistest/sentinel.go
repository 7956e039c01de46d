package redistest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MasterName is the name the sentinels of StartSentinel monitor.
const MasterName = "mymaster"

// Sentinel is a master, one replica of it, and two sentinels monitoring
// them with quorum 1.
type Sentinel struct {
	t         T
	Master    *Server // the master at start
	Replica   *Server // its replica at start
	Sentinels []*Server
}

// StartSentinel starts a master, a replica (--replicaof) and two sentinels
// (redis-server sentinel.conf --sentinel), and waits until both sentinels
// see the replica and each other. A master is considered down after one
// second without an answer.
func StartSentinel(t T) *Sentinel {
	t.Helper()
	need(t, "redis-server")
	s := &Sentinel{t: t}
	s.Master = start(t, nil)
	s.Replica = start(t, func(*Server) []string {
		return []string{"--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port)}
	})
	s.waitFor("the replica to sync", func() (bool, string) {
		r, err := s.Replica.Do("INFO", "replication")
		return err == nil && r.Field("master_link_status") == "up", r.Str
	})
	for range 2 {
		port := FreePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 1\n"+
			"sentinel down-after-milliseconds %[4]s 1000\n"+
			// Short: when both sentinels start an election at once (a busy
			// machine), the split vote is retried after 2x this, and the
			// promotion must happen within startTimeout.
			"sentinel failover-timeout %[4]s 3000\n"+
			"sentinel parallel-syncs %[4]s 1\n",
			port, dir, filepath.Join(dir, "redis.log"), MasterName, s.Master.Port)
		// Sentinel rewrites its configuration file: it must be writable.
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatalf("writing %s: %v", conf, err)
		}
		sn := &Server{t: t, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir,
			args: []string{conf, "--sentinel"}}
		sn.Restart()
		t.Cleanup(sn.Stop)
		s.Sentinels = append(s.Sentinels, sn)
	}
	for _, sn := range s.Sentinels {
		s.waitFor("sentinel "+sn.Addr+" to see the replica and the other sentinel", func() (bool, string) {
			r, err := sn.Do("SENTINEL", "MASTER", MasterName)
			m := r.Map()
			return err == nil && m["flags"] == "master" && m["num-slaves"] == "1" && m["num-other-sentinels"] == "1",
				fmt.Sprint(m, err)
		})
	}
	return s
}

// URL is the --redis-url of the set: both sentinels and the master's name.
func (s *Sentinel) URL() string {
	return "redis-sentinel://" + s.Sentinels[0].Addr + "," + s.Sentinels[1].Addr + "/" + MasterName
}

// MasterAddr is the master's address as the first sentinel that answers
// reports it.
func (s *Sentinel) MasterAddr() string {
	for _, sn := range s.Sentinels {
		if r, err := sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName); err == nil && len(r.Arr) == 2 {
			return net.JoinHostPort(r.Arr[0].Str, r.Arr[1].Str)
		}
	}
	return ""
}

// KillMaster kills the master, as a crash would, and waits until both
// sentinels have promoted the replica and it answers as a master.
// It returns the new master.
func (s *Sentinel) KillMaster() *Server {
	s.t.Helper()
	s.Master.Stop()
	s.waitFor("the sentinels to promote the replica", func() (bool, string) {
		for _, sn := range s.Sentinels {
			r, err := sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
			if err != nil || len(r.Arr) != 2 || r.Arr[1].Str != strconv.Itoa(s.Replica.Port) {
				return false, fmt.Sprint(sn.Addr, " reports ", r.Arr, err)
			}
		}
		r, err := s.Replica.Do("ROLE")
		return err == nil && len(r.Arr) > 0 && r.Arr[0].Str == "master", fmt.Sprint("replica's role: ", r.Arr, err)
	})
	return s.Replica
}

// waitFor polls cond until it holds, or fails the test after startTimeout
// with the sentinels' logs.
func (s *Sentinel) waitFor(what string, cond func() (bool, string)) {
	s.t.Helper()
	var last string
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, sn := range s.Sentinels {
				fmt.Fprintf(&logs, "--- sentinel %s:\n%s\n", sn.Addr, sn.Log())
			}
			s.t.Fatalf("waiting for %s: %s\n%s", what, last, logs.String())
		}
	}
}
