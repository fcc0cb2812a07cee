package services_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/services"
)

// upDirEnv makes the test binary run Up in that directory and exit, so a
// test can check the servers outlive the process that started them.
const upDirEnv = "SERVICES_TEST_UP_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(upDirEnv); dir != "" {
		var o services.Options
		if err := json.Unmarshal([]byte(os.Getenv("SERVICES_TEST_UP_OPTIONS")), &o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		o.Dir, o.Log = dir, os.Stderr
		if _, err := services.Up(context.Background(), o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testenv.Main(m)
}

func TestClickHouseStopStart(t *testing.T) {
	t.Parallel()
	c, err := services.StartClickHouse(t.Context(), t.TempDir(), 0, 0)
	testenv.Must(t, err)
	t.Cleanup(func() { c.Kill() })
	query(t, c.HTTPURL(), "CREATE TABLE t (n UInt8) ENGINE = MergeTree ORDER BY n")
	query(t, c.HTTPURL(), "INSERT INTO t VALUES (1), (2)")
	if got := query(t, c.HTTPURL(), "SELECT value FROM system.settings WHERE name = 'stream_flush_interval_ms'"); got != "500" {
		t.Errorf("stream_flush_interval_ms = %q, want 500 from users.xml", got)
	}
	// The kafka_engine system profile changes CSV for the server's own
	// consumers only; sessions keep the usual CSV.
	if got := query(t, c.HTTPURL(), "SELECT 'a,b' AS x, 1 AS y FORMAT CSV"); got != `"a,b",1` {
		t.Errorf("CSV for users = %q, want the usual comma-separated quoting", got)
	}
	if got := query(t, c.HTTPURL(), "SELECT value FROM system.settings WHERE name = 'input_format_allow_errors_num'"); got != "0" {
		t.Errorf("input_format_allow_errors_num for users = %q, want 0", got)
	}

	pid, httpPort, tcpPort := c.PID(), c.HTTPPort, c.TCPPort
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if c.PID() != 0 || processExists(pid) {
		t.Fatalf("after Stop: PID() = %d, process %d exists = %v", c.PID(), pid, processExists(pid))
	}
	if _, err := services.Query(t.Context(), c.HTTPURL(), "", "SELECT 1"); err == nil {
		t.Fatal("query after Stop succeeded")
	}

	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c.PID() == 0 || c.PID() == pid || c.HTTPPort != httpPort || c.TCPPort != tcpPort {
		t.Errorf("after Start: pid %d (was %d), ports %d %d (were %d %d)", c.PID(), pid, c.HTTPPort, c.TCPPort, httpPort, tcpPort)
	}
	if got := query(t, c.HTTPURL(), "SELECT count() FROM t"); got != "2" {
		t.Errorf("rows after restart = %s, want 2", got)
	}
	if c.NativeAddr() != "127.0.0.1:"+strconv.Itoa(tcpPort) {
		t.Errorf("NativeAddr() = %s", c.NativeAddr())
	}
	if conn, err := net.Dial("tcp", c.NativeAddr()); err != nil {
		t.Errorf("native port: %v", err)
	} else {
		conn.Close()
	}

	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if c.PID() != 0 {
		t.Errorf("after Kill: PID() = %d", c.PID())
	}
}

func TestClickHousePortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = services.StartClickHouse(t.Context(), t.TempDir(), l.Addr().(*net.TCPAddr).Port, 0)
	if errors.Is(err, exec.ErrNotFound) {
		testenv.Must(t, err)
	}
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("err = %v, want the server's complaint about the port", err)
	}
}

func TestRedisStopStart(t *testing.T) {
	t.Parallel()
	r, err := services.StartRedis(t.Context(), t.TempDir(), 0)
	testenv.Must(t, err)
	t.Cleanup(func() { r.Kill() })
	if err := redisPing(r.Addr()); err != nil {
		t.Fatal(err)
	}
	pid, port := r.PID(), r.Port
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if r.PID() != 0 || processExists(pid) || redisPing(r.Addr()) == nil {
		t.Fatalf("redis still runs after Stop")
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r.Port != port || r.PID() == pid || r.PID() == 0 {
		t.Errorf("after Start: port %d pid %d, was %d %d", r.Port, r.PID(), port, pid)
	}
	if err := redisPing(r.Addr()); err != nil {
		t.Fatal(err)
	}
}

func TestUpReadDown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A preferred port something else listens on gets replaced.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	ports := freePorts(t, 2)
	o := services.Options{Dir: dir, NoInstall: true, Log: logWriter{t}, Ports: services.Ports{
		ClickHouseHTTP: ports[0], ClickHouseNative: ports[1], Redis: busyPort,
	}}
	t.Cleanup(func() { services.Down(context.Background(), o) })

	// Up in another process that exits: the servers must stay.
	opts, _ := json.Marshal(services.Options{NoInstall: true, Ports: o.Ports})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), upDirEnv+"="+dir, "SERVICES_TEST_UP_OPTIONS="+string(opts))
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.Must(t, wrapNotFound(string(out)))
		t.Fatalf("up in a child process: %v\n%s", err, out)
	}

	s, err := services.Read(o)
	if err != nil {
		t.Fatal(err)
	}
	if !s.ClickHouseUp || !s.RedisUp || s.ClickHousePID == 0 || s.RedisPID == 0 {
		t.Fatalf("after Up: %+v", s)
	}
	if s.ClickHouseHTTP != fmt.Sprintf("http://127.0.0.1:%d", ports[0]) || s.ClickHouseNative != fmt.Sprintf("127.0.0.1:%d", ports[1]) {
		t.Errorf("clickhouse at %s and %s, want the preferred ports %v", s.ClickHouseHTTP, s.ClickHouseNative, ports)
	}
	if s.RedisAddr == busy.Addr().String() || redisPing(s.RedisAddr) != nil {
		t.Errorf("redis at %s, want a free port instead of the busy one", s.RedisAddr)
	}
	if s.Database != "clickagg" || query(t, s.ClickHouseHTTP, "SELECT count() FROM system.databases WHERE name = 'clickagg'") != "1" {
		t.Errorf("database %q missing", s.Database)
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".gitignore")); err != nil || string(b) != "*\n" {
		t.Errorf(".gitignore = %q, %v", b, err)
	}

	again, err := services.Up(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, s) {
		t.Errorf("second Up changed the status:\n%+v\n%+v", s, again)
	}

	if err := services.Down(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	down, err := services.Read(o)
	if err != nil {
		t.Fatal(err)
	}
	want := s
	want.ClickHousePID, want.RedisPID, want.ClickHouseUp, want.RedisUp = 0, 0, false, false
	if !reflect.DeepEqual(down, want) {
		t.Errorf("after Down: %+v, want %+v", down, want)
	}
	if processExists(s.ClickHousePID) || processExists(s.RedisPID) {
		t.Errorf("processes %d, %d survived Down", s.ClickHousePID, s.RedisPID)
	}
	for _, f := range []string{"clickhouse.pid", "redis.pid"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Down: %v", f, err)
		}
	}

	// A PID file naming some other process: not ours, so not running, and
	// Down must leave the process alone.
	pidFile := filepath.Join(dir, "clickhouse.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := services.Read(o); err != nil || s.ClickHousePID != 0 {
		t.Errorf("Read with a foreign PID: %+v, %v", s, err)
	}
	if err := services.Down(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale PID file kept: %v", err)
	}
}

func TestReadNotStarted(t *testing.T) {
	_, err := services.Read(services.Options{Dir: t.TempDir()})
	if !errors.Is(err, services.ErrNotStarted) {
		t.Errorf("err = %v, want ErrNotStarted", err)
	}
	if err := services.Down(t.Context(), services.Options{Dir: filepath.Join(t.TempDir(), "none")}); err != nil {
		t.Errorf("Down with nothing running: %v", err)
	}
}

func TestStatusEnv(t *testing.T) {
	s := services.Status{
		ClickHouseHTTP:   "http://127.0.0.1:18123",
		ClickHouseNative: "127.0.0.1:19000",
		Database:         `it's "odd" $HOME`,
		RedisAddr:        "127.0.0.1:16379",
		ClickHouseUp:     true,
		AnalystUser:      "analyst",
		AnalystPassword:  `p'w "x"`,
	}
	env := s.Env()
	if !strings.Contains(env, "CLICKAGG_REDIS_ADDR=127.0.0.1:16379\n") {
		t.Errorf("plain values should stay unquoted:\n%s", env)
	}
	cmd := exec.Command("sh", "-c", `eval "$X"; printf '%s|' "$CLICKAGG_CLICKHOUSE_HTTP" "$CLICKAGG_CLICKHOUSE_NATIVE" "$CLICKAGG_CLICKHOUSE_DATABASE" "$CLICKAGG_REDIS_ADDR" "$CLICKAGG_CLICKHOUSE_UP" "$CLICKAGG_REDIS_UP" "$CLICKAGG_ANALYST_USER" "$CLICKAGG_ANALYST_PASSWORD"`)
	cmd.Env = append(os.Environ(), "X="+env)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := `http://127.0.0.1:18123|127.0.0.1:19000|it's "odd" $HOME|127.0.0.1:16379|true|false|analyst|p'w "x"|`
	if string(out) != want {
		t.Errorf("eval gave %s\nwant       %s\nfrom:\n%s", out, want, env)
	}
}

func TestInstallNothingMissing(t *testing.T) {
	for _, bin := range []string{"clickhouse-server", "clickhouse-client", "redis-server"} {
		if _, err := os.Stat("/usr/bin/" + bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				t.Skipf("%s not installed; not running apt-get in a test", bin)
			}
		}
	}
	var log strings.Builder
	if err := services.Install(t.Context(), &log, true); err != nil || log.Len() != 0 {
		t.Errorf("Install = %v, log %q; want nothing to do", err, log.String())
	}
}

func query(t *testing.T, url, q string) string {
	t.Helper()
	out, err := services.Query(t.Context(), url, "", q)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(out, "\n")
}

func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprint(conn, "PING\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// processExists reports whether pid runs; a zombie does not.
func processExists(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && !strings.ContainsAny(string(b[i+2]), "ZX")
}

func freePorts(t *testing.T, n int) []int {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// wrapNotFound turns a child's complaint about a missing binary back into
// an error testenv.Must can skip on.
func wrapNotFound(out string) error {
	if strings.Contains(out, exec.ErrNotFound.Error()) {
		return fmt.Errorf("%s: %w", strings.TrimSpace(out), exec.ErrNotFound)
	}
	return nil
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
