// Command nodens holds the namespaces the local cluster (`make cluster`) runs
// in, so that almost nothing it does reaches the host:
//
//   - a network namespace: the node's interfaces, routes, iptables rules and
//     per-network sysctls live and die with it, and it has no route out;
//   - a mount namespace, private from the host's: the kubelet's and
//     containerd's mounts (volumes, container root filesystems, network
//     namespace pins) vanish with it, and the paths they insist on
//     (/var/lib/kubelet, /var/log, /run) are bind mounts or a tmpfs in it;
//   - a PID namespace whose init this command is: when it dies, the kernel
//     kills every process of the node, containers included;
//   - a UTS namespace, for the node's hostname.
//
// `nodens run` stays on the host: it starts `nodens init` in the new
// namespaces and forwards one TCP address on the host's loopback (the API
// server's, for kubectl and the tests) into the node's network namespace, so
// that the host needs no interface of its own towards the node. It exits
// when init does; on SIGTERM it asks init to stop every process, waits the
// grace period, then kills init (and with it the rest).
//
// The components themselves are started by hack/cluster/up.sh with nsenter.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nodens run|init [flags]")
		os.Exit(2)
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("nodens " + os.Args[1] + ": ")
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	state := fs.String("state", "", "the cluster's state directory (scratch mount points go here)")
	hostname := fs.String("hostname", "meterr-node", "the node's hostname")
	var binds, tmpfs, forwards listFlag
	fs.Var(&binds, "bind", "SRC:DST, bind-mount SRC on DST inside (repeatable; DST must exist)")
	fs.Var(&tmpfs, "tmpfs", "a directory to mount a fresh tmpfs on inside (repeatable)")
	fs.Var(&forwards, "forward", "HOSTADDR=NODEADDR, forward a TCP address on the host to one in the node (repeatable)")
	pidFile := fs.String("pidfile", "", "write the init's host PID here once the namespaces are ready")
	grace := fs.Duration("grace", 5*time.Second, "how long processes get between SIGTERM and SIGKILL")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "run":
		err = run(*state, *hostname, binds, tmpfs, forwards, *pidFile, *grace)
	case "init":
		err = initNode(*state, *hostname, binds, tmpfs, *grace)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

func run(state, hostname string, binds, tmpfs, forwards []string, pidFile string, grace time.Duration) error {
	if state == "" {
		return errors.New("--state is required")
	}
	// Listen first: a port already taken fails here, before anything starts.
	type fwd struct {
		ln     net.Listener
		target string
	}
	var fwds []fwd
	for _, f := range forwards {
		host, target, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("--forward %q: want HOSTADDR=NODEADDR", f)
		}
		if ip, _, err := net.SplitHostPort(host); err != nil || !net.ParseIP(ip).IsLoopback() {
			return fmt.Errorf("--forward %q: the host side must be a loopback address", f)
		}
		ln, err := net.Listen("tcp", host)
		if err != nil {
			return err
		}
		fwds = append(fwds, fwd{ln, target})
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	args := []string{"init", "--state", state, "--hostname", hostname, "--grace", grace.String()}
	for _, b := range binds {
		args = append(args, "--bind", b)
	}
	for _, t := range tmpfs {
		args = append(args, "--tmpfs", t)
	}
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		// If this process dies, so does the node.
		Pdeathsig: syscall.SIGKILL,
	}
	// Pdeathsig fires when the starting thread exits, not the process.
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting init in new namespaces: %w", err)
	}
	readyW.Close()
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// init writes one byte once its mounts are in place.
	b := make([]byte, 1)
	if n, _ := ready.Read(b); n != 1 {
		return fmt.Errorf("init exited before it was ready: %v", <-done)
	}
	ready.Close()
	nsfd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	for _, f := range fwds {
		go serve(f.ln, nsfd, f.target)
	}
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			_ = cmd.Process.Kill()
			return err
		}
	}
	log.Printf("node namespaces ready: init is PID %d", pid)

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-done:
		return fmt.Errorf("init exited: %v", err)
	case s := <-sig:
		log.Printf("%v: stopping the node", s)
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-done:
	case <-time.After(grace + 5*time.Second):
		log.Printf("init still running after %v: killing it", grace+5*time.Second)
		_ = cmd.Process.Kill()
		<-done
	}
	log.Printf("node stopped")
	return nil
}

// serve forwards each connection accepted on ln to target inside the
// network namespace nsfd.
func serve(ln net.Listener, nsfd int, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("accept on %s: %v", ln.Addr(), err)
			return
		}
		go func() {
			defer c.Close()
			u, err := dialIn(nsfd, target)
			if err != nil {
				log.Printf("dial %s in the node: %v", target, err)
				return
			}
			defer u.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			go pipe(u, c)
			go pipe(c, u)
			wg.Wait()
		}()
	}
}

// dialIn opens a TCP connection from inside the network namespace nsfd: the
// socket belongs to the namespace its creating thread is in.
func dialIn(nsfd int, target string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine rather than
		// going back to the scheduler in the node's namespace.
		runtime.LockOSThread()
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, err}
			return
		}
		c, err := net.DialTimeout("tcp", target, 5*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// initNode is PID 1 of the node: it sets up the mount namespace, reports
// ready on fd 3, then reaps orphans until SIGTERM, when it stops everything.
func initNode(state, hostname string, binds, tmpfs []string, grace time.Duration) error {
	// Nothing mounted here may reach the host: cut propagation first.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	if err := remountSys(state); err != nil {
		return err
	}
	for _, t := range tmpfs {
		if err := unix.Mount("tmpfs", t, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", t, err)
		}
	}
	for _, b := range binds {
		src, dst, ok := strings.Cut(b, ":")
		if !ok {
			return fmt.Errorf("--bind %q: want SRC:DST", b)
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, dst, err)
		}
	}
	// Shared within the node (new peer groups, none with the host), as the
	// kubelet and runc expect of a host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("making / shared: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return err
	}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	ready := os.NewFile(3, "ready")
	_, _ = ready.Write([]byte{1})
	ready.Close()
	for s := range sig {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		break
	}
	log.Printf("stopping every process of the node (grace %v)", grace)
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		reap()
		if err := unix.Kill(-1, 0); errors.Is(err, unix.ESRCH) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Returning ends PID 1: the kernel kills whatever is left.
	log.Printf("grace over: killing what is left")
	return nil
}

func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// remountSys mounts a sysfs of the node's network namespace on /sys (so
// /sys/class/net shows the node's interfaces), keeping the host's cgroup
// hierarchies under it.
func remountSys(state string) error {
	keep := filepath.Join(state, ".cgroup-move")
	if err := os.MkdirAll(keep, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/sys/fs/cgroup", keep, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping /sys/fs/cgroup: %w", err)
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmounting /sys: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting sysfs: %w", err)
	}
	if err := unix.Mount(keep, "/sys/fs/cgroup", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the cgroup hierarchies back: %w", err)
	}
	return nil
}
