package services

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one server process: how to start it, how to tell it is ready,
// and the running child, if any. ClickHouse and Redis embed it for their
// Start, Stop, Kill and PID.
type process struct {
	name    string // for messages: "clickhouse", "redis"
	bin     string
	args    []string
	dir     string // working directory; also how Down recognises the process
	logPath string // stdout and stderr
	detach  bool   // outlive this process (Up) instead of dying with it (tests)
	limit   time.Duration
	grace   time.Duration // between SIGTERM and SIGKILL
	ready   func(ctx context.Context) error
	failure func() string // why it exited early, from its logs

	cmd    *exec.Cmd
	exited chan struct{}
}

// errExited means a server quit while starting, usually over its config or
// a port in use.
var errExited = errors.New("exited")

// Start starts the server again after Stop or Kill, with the same directory
// and ports, and waits until it answers. It does nothing if the server runs.
func (p *process) Start(ctx context.Context) error {
	if p.running() {
		return nil
	}
	out, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	// A session of its own: no terminal signals, and one group to kill.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !p.detach {
		// A test binary that dies without cleaning up takes its servers along.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // the status does not matter; readiness and logs tell more
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited

	exitedEarly := func() bool { return !p.running() }
	if err := waitReady(ctx, p.limit, exitedEarly, p.ready); err != nil {
		p.Kill()
		if errors.Is(err, errExited) {
			return fmt.Errorf("%s %w: %s", p.name, errExited, p.failure())
		}
		return fmt.Errorf("%s %w", p.name, err)
	}
	return nil
}

func (p *process) running() bool {
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// PID is the server's process ID, 0 when it is not running.
func (p *process) PID() int {
	if !p.running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop shuts the server down with SIGTERM, SIGKILL if it takes too long.
func (p *process) Stop() error {
	if !p.running() {
		return nil
	}
	err := stopPID(context.Background(), p.cmd.Process.Pid, p.grace)
	<-p.exited
	return err
}

// Kill ends the server with SIGKILL, as a crash would.
func (p *process) Kill() error {
	if !p.running() {
		return nil
	}
	err := stopPID(context.Background(), p.cmd.Process.Pid, 0)
	<-p.exited
	return err
}

// waitReady polls ready until it succeeds, the process exits, ctx ends or
// limit passes.
func waitReady(ctx context.Context, limit time.Duration, exited func() bool, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if exited() {
			return errExited
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		err := ready(attempt)
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last error: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// stopPID sends SIGTERM to the process group led by pid and SIGKILL if the
// leader is still alive after grace (or when ctx ends).
func stopPID(ctx context.Context, pid int, grace time.Duration) error {
	if grace > 0 {
		if err := signalGroup(pid, syscall.SIGTERM); err != nil {
			return err
		}
		if waitExit(ctx, pid, grace) {
			return nil
		}
	}
	if err := signalGroup(pid, syscall.SIGKILL); err != nil {
		return err
	}
	if !waitExit(context.Background(), pid, 10*time.Second) {
		return fmt.Errorf("process %d survived SIGKILL", pid)
	}
	return nil
}

func signalGroup(pid int, sig syscall.Signal) error {
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal process %d: %w", pid, err)
	}
	return nil
}

func waitExit(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// alive reports whether pid is a running process; a zombie is not.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}

// owned reports whether pid is a live process that runs in dir and whose
// command line contains marker: a process this package started, not one that
// reused its PID.
func owned(pid int, dir, marker string) bool {
	if pid <= 0 || !alive(pid) {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil || filepath.Clean(cwd) != filepath.Clean(dir) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte(marker))
}

// onFreePorts calls start with want, its zeros replaced by free ports. A
// picked port can be taken before the server binds it, so when the server
// exits naming a picked port, it tries twice more with other ports.
func onFreePorts(want []int, start func(ports []int) error) error {
	for attempt := 1; ; attempt++ {
		ports := slices.Clone(want)
		free, err := freePorts(len(want))
		if err != nil {
			return err
		}
		var picked []int
		for i := range ports {
			if ports[i] == 0 {
				ports[i] = free[i]
				picked = append(picked, free[i])
			}
		}
		err = start(ports)
		if err == nil || attempt == 3 || !errors.Is(err, errExited) || !mentionsAny(err.Error(), picked) {
			return err
		}
	}
}

func mentionsAny(msg string, ports []int) bool {
	return slices.ContainsFunc(ports, func(p int) bool { return strings.Contains(msg, strconv.Itoa(p)) })
}

// freePorts returns n distinct ports nobody listens on right now.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close() // held until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// lastLine returns the last line of path for which keep is true.
func lastLine(path string, keep func(string) bool) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	last := "no message in " + path
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" && keep(line) {
			last = line
		}
	}
	return last
}

// lookBinary finds a server binary; sbin directories are often not on PATH
// for ordinary users.
func lookBinary(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}
