// Package redistest runs real Redis servers (Debian's redis-server package,
// which hack/test.sh installs) for tests, each on ports of its own, without
// persistence, stopped when the test ends: a single server (Start), a
// three-master Redis Cluster (StartCluster) and a Sentinel-managed master
// with one replica and two sentinels (StartSentinel). Every address is on
// the loopback interface.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// T is what Start needs of a test: *testing.T and Ginkgo's GinkgoT() both
// have it.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Skip(args ...any)
	TempDir() string
	Cleanup(func())
}

// RequireEnv, set to 1 (as hack/test.sh does), turns a skip for a missing
// binary into a failure.
const RequireEnv = "MTR_REQUIRE_REDIS"

// startTimeout bounds how long a server may take to start, and a cluster or
// sentinel setup to settle: generous, for a busy machine.
const startTimeout = 60 * time.Second

// Server is a running redis-server (or sentinel).
type Server struct {
	t    T
	Addr string // 127.0.0.1:port
	Port int
	dir  string
	// args follow the binary; Restart starts it with them again.
	args []string
	cmd  *exec.Cmd
}

// need skips the test when a binary is missing, or fails it when
// MTR_REQUIRE_REDIS=1.
func need(t T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv(RequireEnv) == "1" {
				t.Fatalf("%s is not installed (hack/test.sh installs it with apt-get; %s=1 makes this a failure, not a skip)", b, RequireEnv)
			}
			t.Skip(b + " is not installed; hack/test.sh installs it (apt-get install redis-server redis-tools)")
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t T) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts a redis-server. Without one installed the test is skipped,
// or fails when MTR_REQUIRE_REDIS=1 (as hack/test.sh sets it).
func Start(t T) *Server {
	t.Helper()
	need(t, "redis-server")
	return start(t, nil)
}

// start starts redis-server on a free port with extra arguments.
func start(t T, extra func(s *Server) []string) *Server {
	t.Helper()
	port := FreePort(t)
	s := &Server{t: t, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: t.TempDir()}
	s.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}
	if extra != nil {
		s.args = append(s.args, extra(s)...)
	}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Restart starts the server again after Stop, on the same port and empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.cmd = exec.CommandContext(context.Background(), "redis-server", s.args...) //nolint:gosec // a test's own server, fixed arguments
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(20 * time.Millisecond) {
		if _, err := s.Do("PING"); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not start on %s: %v\n%s", s.Addr, err, s.Log())
		}
	}
}

// Log is the server's log file.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b)
}

// Stop kills the server, as an outage would.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Do sends one command to the server over a fresh connection and returns
// its answer (see Reply).
func (s *Server) Do(args ...string) (Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return Reply{}, err
	}
	defer func() { _ = c.Close() }()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	return do(c, args...)
}

// MustDo is Do that fails the test on an error or an error reply.
func (s *Server) MustDo(args ...string) Reply {
	s.t.Helper()
	r, err := s.Do(args...)
	if err == nil && r.Err != "" {
		err = fmt.Errorf("%s", r.Err)
	}
	if err != nil {
		s.t.Fatalf("%s on %s: %v", args[0], s.Addr, err)
	}
	return r
}
