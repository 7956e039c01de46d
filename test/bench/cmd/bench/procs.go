package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meterr/meterr-operator/test/testenv"
)

// proc is a process the harness started and must stop.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	started time.Time
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the end of the process's log, for error messages.
func (p *proc) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const n = 3000
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// stop sends SIGTERM, waits, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// procs tracks every child so that nothing outlives the harness. Each pid is
// also appended to a file that hack/bench.sh reads if the harness itself is
// killed before it can clean up.
type procs struct {
	mu       sync.Mutex
	list     []*proc
	dir      string
	pidsFile string
	taskset  string
	// others are the control plane's processes (etcd, kube-apiserver): not
	// measured, but their CPU during a load run is reported as noise.
	others []int
}

func (ps *procs) recordPID(pid int, name string) {
	f, err := os.OpenFile(ps.pidsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%d %s\n", pid, name)
}

// command builds argv, pinned to cpus with taskset when asked and possible.
func (ps *procs) command(ctx context.Context, cpus string, argv []string) *exec.Cmd {
	if cpus != "" && ps.taskset != "" {
		argv = append([]string{ps.taskset, "-c", cpus}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// If the harness dies, so do its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start starts a long-running process with its output in <dir>/<name>.log.
func (ps *procs) start(name, cpus string, argv ...string) (*proc, error) {
	return ps.startEnv(name, cpus, nil, argv...)
}

// startEnv is start with extra environment variables.
func (ps *procs) startEnv(name, cpus string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := ps.command(context.Background(), cpus, argv)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), started: time.Now()}
	ps.recordPID(cmd.Process.Pid, name)
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// run runs a short-lived process (wrk, load, kubectl) and returns its
// standard output.
func (ps *procs) run(ctx context.Context, name, cpus string, argv ...string) ([]byte, error) {
	cmd := ps.command(ctx, cpus, argv)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	ps.recordPID(cmd.Process.Pid, name)
	if err := cmd.Wait(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Go(func() { p.stop(20 * time.Second) })
	}
	wg.Wait()
}

// recordChildren appends the pids of the harness's direct children that it
// did not start itself (the control plane's etcd and kube-apiserver, which
// envtest starts in their own process groups) to the pids file.
func (ps *procs) recordChildren() {
	self := os.Getpid()
	// Only the control plane just started: an earlier one's pids are gone
	// and may since belong to something else.
	ps.mu.Lock()
	ps.others = nil
	ps.mu.Unlock()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := statFields(stat)
		if len(fields) > 1 && fields[1] == strconv.Itoa(self) {
			comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
			ps.recordPID(pid, strings.TrimSpace(string(comm)))
			ps.mu.Lock()
			ps.others = append(ps.others, pid)
			ps.mu.Unlock()
		}
	}
}

// othersTicks is the CPU time of the control plane's live processes.
func (ps *procs) othersTicks() int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var n int64
	for _, pid := range ps.others {
		if t, err := cpuTicks(pid); err == nil {
			n += t
		}
	}
	return n
}

// statFields returns the fields of /proc/<pid>/stat after the command name:
// [0] is the state (field 3), [1] the parent pid (field 4), [11] utime
// (field 14), [12] stime (field 15).
func statFields(stat []byte) []string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

// clockTicks is USER_HZ, the unit of utime and stime: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// cpuTicks returns a process's user plus system CPU time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := statFields(stat)
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad /proc stat")
	}
	return u + s, nil
}

// rssBytes returns a process's resident set size (VmRSS).
func rssBytes(pid int) (int64, error) {
	m, err := procStatus(pid)
	if err != nil {
		return 0, err
	}
	v, ok := m["VmRSS"]
	if !ok {
		return 0, errors.New("no VmRSS")
	}
	return v, nil
}

// procStatus returns the kB fields of /proc/<pid>/status (VmRSS, VmHWM,
// RssAnon, RssFile, ...) in bytes.
func procStatus(pid int) (map[string]int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(data), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				out[name] = kb * 1024
			}
		}
	}
	return out, nil
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func freeAddr() (string, error) {
	p, err := freePort()
	return "127.0.0.1:" + strconv.Itoa(p), err
}

// waitHTTP polls url every 10 ms until it answers 200, the process exits or
// the timeout passes.
func waitHTTP(ctx context.Context, url string, p *proc, timeout time.Duration) error {
	alive := func() error {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before %s answered 200 (%w); its log ends with:\n%s", p.name, url, p.err, p.logTail())
		}
		return nil
	}
	err := testenv.WaitHTTP(ctx, url, timeout, 10*time.Millisecond, alive)
	if errors.Is(err, testenv.ErrTimeout) && p != nil {
		return fmt.Errorf("%w; its log ends with:\n%s", err, p.logTail())
	}
	return err
}

// mem is a process's resident memory, split as the kernel counts it:
// anonymous (heap, stacks) and file-backed (the binary's pages).
type mem struct{ rss, anon, file int64 }

func memOf(p *proc) (mem, error) {
	m, err := procStatus(p.pid())
	if err != nil {
		return mem{}, err
	}
	return mem{rss: m["VmRSS"], anon: m["RssAnon"], file: m["RssFile"]}, nil
}

// String is "30.1 MiB (12.0 anonymous + 18.1 file-backed)".
func (m mem) String() string {
	return fmt.Sprintf("%s (%.1f anonymous + %.1f file-backed)", mib(m.rss), float64(m.anon)/(1<<20), float64(m.file)/(1<<20))
}
