package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

// TestServeStartFailures: `clickagg serve` whose listen or debug address
// is taken exits non-zero within 2 s with one line saying why, and leaves
// no process behind (it used to hang with its background work running).
func TestServeStartFailures(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"listen taken", []string{"--listen", taken.Addr().String()}, "clickagg serve: listen: listen tcp " + taken.Addr().String() + ": bind: address already in use"},
		{"debug listen taken", []string{"--listen", free, "--debug-listen", taken.Addr().String()}, "clickagg serve: debug listen: listen tcp " + taken.Addr().String() + ": bind: address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Servers that are not there: a start that got past its listeners
			// would take longer than the limit to fail on them.
			args := append([]string{"serve", "--clickhouse-http", "http://127.0.0.1:1", "--clickhouse-native", "127.0.0.1:1", "--redis-addr", "127.0.0.1:1"}, tc.args...)
			cmd := exec.Command(clickaggBinary(t), args...)
			cmd.Env = clickaggEnv(t)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			// Its own process group: whatever it starts can be found after.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			began := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(2 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
				t.Fatalf("still running 2 s after start; stderr:\n%s", stderr.String())
			}
			t.Logf("exited after %v", time.Since(began).Round(time.Millisecond))
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("exit %v, want status 1", err)
			}
			if got := strings.TrimSpace(stderr.String()); got != tc.want {
				t.Errorf("stderr %q, want the one line %q", got, tc.want)
			}
			if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("processes left in its group: %v", err)
			}
		})
	}
}

// lockedBuffer is a log sink the test reads while the server writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records are the JSON log lines written so far.
func (l *lockedBuffer) records(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		out = append(out, r)
	}
	return out
}

// TestServerErrorsLoggedNotSent: when ClickHouse fails a question or an
// insert for good (here: the tables are gone), the client gets 500 with a
// generic message and a request id, never ClickHouse's text; the log has
// that text once, at error level, with the same id, method and route.
func TestServerErrorsLoggedNotSent(t *testing.T) {
	s := &stack{t: t, db: testenv.Migrated(t), redisAddr: testenv.Redis(t).Addr(), logs: new(lockedBuffer)}
	s.start()
	t.Cleanup(func() { s.stop() })
	testenv.Exec(t, s.db, "DROP TABLE dim_stats_minute")
	testenv.Exec(t, s.db, "DROP TABLE ad_stats_minute")
	testenv.Exec(t, s.db, "RENAME TABLE events TO events_gone")

	event := `{"event_id":"e-500","type":"click","ts":"` + time.Now().UTC().Format(time.RFC3339) + `","ad_id":"a1","country":"US","ad_format":"banner"}`
	for _, tc := range []struct{ method, path, route, body string }{
		{"GET", "/v1/metrics/US/banner?window=5m", "/v1/metrics/:country/:ad_format", ""},
		{"GET", "/v1/metrics?group_by=ad_id&window=5m", "/v1/metrics", ""},
		{"POST", "/v1/events", "/v1/events", event},
	} {
		req, _ := http.NewRequest(tc.method, s.url+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Cache-Control", "no-cache")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body struct {
			Error     string `json:"error"`
			RequestID string `json:"request_id"`
		}
		json.Unmarshal(raw, &body)
		id := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != 500 || body.Error == "" || id == "" || body.RequestID != id {
			t.Errorf("%s %s: %d %s (X-Request-Id %q), want 500 with an error and the request id", tc.method, tc.path, resp.StatusCode, raw, id)
		}
		for _, leak := range []string{"Exception", "Code:", "doesn't exist", "UNKNOWN_TABLE", s.db.Database, "127.0.0.1"} {
			if strings.Contains(string(raw), leak) {
				t.Errorf("%s %s: the answer carries server text %q: %s", tc.method, tc.path, leak, raw)
			}
		}
		var found []map[string]any
		for _, r := range s.logs.records(t) {
			if r["request_id"] == id {
				found = append(found, r)
			}
		}
		if len(found) != 1 {
			t.Errorf("%s %s: %d log records with request id %s, want 1", tc.method, tc.path, len(found), id)
			continue
		}
		r := found[0]
		if r["level"] != "ERROR" || r["method"] != tc.method || r["route"] != tc.route || r["status"] != 500.0 ||
			!strings.Contains(r["err"].(string), "doesn't exist") {
			t.Errorf("%s %s: log record %v, want level ERROR, method, route %s, status and ClickHouse's text", tc.method, tc.path, r, tc.route)
		}
	}
}
