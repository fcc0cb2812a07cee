package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

// The clickagg binary, built once per test binary from this checkout.
var binary struct {
	once sync.Once
	path string
	err  error
}

// clickaggBinary builds cmd/clickagg into a directory named after this
// checkout, overwritten by each run so that runs leave one file behind.
func clickaggBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		root, err := filepath.Abs("..") // tests run in the package directory
		if err != nil {
			binary.err = err
			return
		}
		sum := sha256.Sum256([]byte(root))
		dir := filepath.Join(os.TempDir(), "clickagg-e2e-"+hex.EncodeToString(sum[:6]))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			binary.err = err
			return
		}
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		binary.path = filepath.Join(dir, "clickagg")
		cmd := exec.Command(gobin, "build", "-o", binary.path, "./cmd/clickagg")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// proc is a `clickagg serve` process on a fixed address, so that it can
// be killed and started again where its clients expect it.
type proc struct {
	t    *testing.T
	args []string
	addr string
	log  string // stderr of every run, appended

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
}

// serveProc starts `clickagg serve` on db and redisAddr with extra flags
// after the tests' defaults (a later flag wins). It is killed at cleanup.
func serveProc(t *testing.T, db testenv.ClickHouseDB, redisAddr string, extra ...string) *proc {
	t.Helper()
	p := &proc{t: t, addr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), log: filepath.Join(t.TempDir(), "serve.log")}
	p.args = append([]string{"serve",
		"--listen", p.addr,
		"--clickhouse-http", db.HTTPURL, "--clickhouse-native", db.NativeAddr, "--clickhouse-database", db.Database,
		"--redis-addr", redisAddr,
		"--no-reconcile", "--kafka-verify-every", "0",
	}, extra...)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("serve log (tail):\n%s", p.logTail(40))
		}
	})
	p.start()
	return p
}

// start runs the binary and waits until it serves; it returns how long
// that took.
func (p *proc) start() time.Duration {
	t := p.t
	t.Helper()
	began := time.Now()
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(clickaggBinary(t), p.args...)
	cmd.Env = clickaggEnv(t)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.exitErr = cmd, exited, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case <-exited:
			t.Fatalf("clickagg serve exited while starting: %v\n%s", p.exitErr, p.logTail(20))
		default:
		}
		if resp, err := hc.Get(p.url("/healthz")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(began)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("clickagg serve not serving after 30 s\n%s", p.logTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) url(path string) string { return "http://" + p.addr + path }

// pid is the running process's id, 0 when it is not running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if pid := p.pid(); pid != 0 {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.t.Fatal(err)
		}
	}
}

// wait waits up to limit for the process to exit and returns its exit
// code; ok is false when it was still running at the limit.
func (p *proc) wait(limit time.Duration) (code int, ok bool) {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return 0, true
	}
	select {
	case <-exited:
	case <-time.After(limit):
		return 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ee *exec.ExitError
	switch {
	case p.exitErr == nil:
		return 0, true
	case errors.As(p.exitErr, &ee):
		return ee.ExitCode(), true // -1 when killed by a signal
	}
	return -1, true
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	if _, ok := p.wait(10 * time.Second); !ok {
		p.t.Errorf("clickagg serve survived SIGKILL")
	}
}

func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// memKiB reads the resident set size and its peak (VmRSS, VmHWM) of the
// running process in KiB; zeros when it is not running.
func (p *proc) memKiB() (rss, peak int64) {
	pid := p.pid()
	if pid == 0 {
		return 0, 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak
}

// clickaggEnv is the environment of every clickagg the tests run: no
// developer's CLICKAGG_* settings and no local services' state file.
func clickaggEnv(t *testing.T) []string {
	return []string{"CLICKAGG_DATA_DIR=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
}

// reconcileFix runs `clickagg reconcile --fix` over [from, to) of db and
// returns the differing rows it corrected, by table.
func reconcileFix(t *testing.T, db testenv.ClickHouseDB, from, to time.Time) map[string]int64 {
	t.Helper()
	cmd := exec.Command(clickaggBinary(t), "reconcile", "--fix", "--json",
		"--clickhouse-http", db.HTTPURL, "--clickhouse-native", db.NativeAddr, "--clickhouse-database", db.Database,
		"--from", from.UTC().Format(time.RFC3339), "--to", to.UTC().Format(time.RFC3339))
	cmd.Env = clickaggEnv(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("clickagg reconcile: %v\n%s\n%s", err, out, stderr.Bytes())
	}
	var rep struct {
		Fixed  bool
		Tables []struct {
			Table string
			Rows  int64
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("clickagg reconcile: %v\n%s", err, out)
	}
	fixed := map[string]int64{}
	for _, tb := range rep.Tables {
		if tb.Rows > 0 {
			fixed[tb.Table] += tb.Rows
		}
	}
	return fixed
}

// ingestStatus is the part of /v1/ingest/status the tests read.
type ingestStatus struct {
	Collector struct {
		Requests, Accepted, Duplicates, Rejected, Shed, Failed int64
	}
	Ingestor struct {
		BufferedRows  int64 `json:"buffered_rows"`
		CommittedRows int64 `json:"committed_rows"`
		FailedRows    int64 `json:"failed_rows"`
		Retries       int64
		Recovered     int64
	}
}

func (p *proc) ingestStatus() ingestStatus {
	p.t.Helper()
	var st ingestStatus
	p.getJSON("/v1/ingest/status", &st)
	return st
}

func (p *proc) getJSON(path string, v any) {
	p.t.Helper()
	resp, err := http.Get(p.url(path))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		p.t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		p.t.Fatalf("%s: %v", path, err)
	}
}

// outcome is what one POST of a batch got.
type outcome struct {
	status     int
	retryAfter string
	ans        answer
	err        error  // no HTTP answer at all
	message    string // of a non-200 answer
}

// postBatch posts one NDJSON body once.
func postBatch(ctx context.Context, hc *http.Client, url string, body []byte) outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := hc.Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	o := outcome{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), err: err}
	if err == nil && resp.StatusCode == 200 {
		o.err = json.Unmarshal(raw, &o.ans)
	} else {
		o.message = string(raw[:min(len(raw), 300)])
	}
	return o
}

// retryAfter is the wait a 503 asks for, one second when it says nothing
// readable.
func retryAfter(v string) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	return time.Second
}

// sleepCtx waits d or until ctx ends, reporting whether it waited d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
