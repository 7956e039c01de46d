package redistest

import (
	"strconv"
	"testing"
)

func TestServer(t *testing.T) {
	s := Start(t)
	if r := s.MustDo("SET", "k", "v"); r.Str != "OK" {
		t.Fatalf("SET: %+v", r)
	}
	if r := s.MustDo("GET", "k"); r.Str != "v" {
		t.Fatalf("GET: %+v", r)
	}
	s.Stop()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("a stopped server answers")
	}
	s.Restart()
	if r := s.MustDo("GET", "k"); !r.Nil {
		t.Fatalf("a restarted server is not empty: %+v", r)
	}
}

func TestCluster(t *testing.T) {
	c := StartCluster(t)
	// Keys spread over the three masters; a hash tag keeps keys together.
	for i := range 30 {
		k := "k" + strconv.Itoa(i)
		slot := c.Nodes[0].MustDo("CLUSTER", "KEYSLOT", k).Int
		if tagged := c.Nodes[0].MustDo("CLUSTER", "KEYSLOT", "x:{"+k+"}:y").Int; tagged != slot {
			t.Fatalf("hash tag: slot %d, want %d", tagged, slot)
		}
	}
	if got := c.Get("nothing"); !got.Nil {
		t.Fatalf("Get of a missing key: %+v", got)
	}
	// NodeOf finds the node that holds a key; the others answer MOVED.
	n := c.NodeOf("k1")
	n.MustDo("SET", "k1", "v")
	for _, o := range c.Nodes {
		if r, err := o.Do("GET", "k1"); err != nil || (o == n) != (r.Str == "v") {
			t.Fatalf("node %s: %+v %v", o.Addr, r, err)
		}
	}
	// A restarted node rejoins with its slots, empty.
	n.Stop()
	n.Restart()
	c.WaitOK()
	if got := c.Get("k1"); !got.Nil {
		t.Fatalf("after a restart: %+v", got)
	}
}

func TestSentinel(t *testing.T) {
	s := StartSentinel(t)
	if got, want := s.MasterAddr(), s.Master.Addr; got != want {
		t.Fatalf("master %q, want %q", got, want)
	}
	s.Master.MustDo("SET", "k", "v")
	if m := s.KillMaster(); m != s.Replica || s.MasterAddr() != s.Replica.Addr {
		t.Fatalf("after the failover the master is %q", s.MasterAddr())
	}
	s.Replica.MustDo("SET", "k2", "v") // writable: a master now
}
