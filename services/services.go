// Package services runs the local ClickHouse and Redis that clickagg needs
// as ordinary processes, without Docker: for developers (Up, Down, Read) and
// for tests (StartClickHouse, StartRedis).
package services

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Database is the database Up creates for clickagg.
const Database = "clickagg"

// How long a server may take to shut down after SIGTERM.
const (
	clickHouseGrace = 15 * time.Second
	redisGrace      = 5 * time.Second
)

// Preferred ports of the services Up starts.
const (
	DefaultClickHouseHTTPPort   = 18123
	DefaultClickHouseNativePort = 19000
	DefaultRedisPort            = 16379
)

// ErrNotStarted means Up has never run in the data directory.
var ErrNotStarted = errors.New("services not started")

// Options says where the services live. The zero value works.
type Options struct {
	Dir       string    // data directory; default ".local"
	Log       io.Writer // progress messages; nil = discard
	NoInstall bool      // do not apt-get install missing packages
	Ports     Ports     // preferred ports; zero fields = defaults
	// AnalystPassword is the password Up gives the analyst login; empty:
	// $CLICKAGG_ANALYST_PASSWORD, else the one Up kept in Dir, else a new
	// random one.
	AnalystPassword string
}

// Ports are the ports Up prefers. A preferred port that something else
// listens on is replaced by a free one.
type Ports struct {
	ClickHouseHTTP   int
	ClickHouseNative int
	Redis            int
}

// Status is where the local services listen and whether they run.
type Status struct {
	ClickHouseHTTP   string // e.g. "http://127.0.0.1:18123"
	ClickHouseNative string // e.g. "127.0.0.1:19000"
	Database         string // "clickagg"
	AnalystUser      string // "analyst"; empty if Up has not made one here yet
	AnalystPassword  string // the analyst's password
	RedisAddr        string // "127.0.0.1:16379"
	ClickHousePID    int    // 0 when not running
	RedisPID         int    // 0 when not running
	ClickHouseUp     bool   // running and answering
	RedisUp          bool   // running and answering
}

// Env returns the status as KEY=value lines for a shell to eval.
func (s Status) Env() string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"CLICKAGG_CLICKHOUSE_HTTP", s.ClickHouseHTTP},
		{"CLICKAGG_CLICKHOUSE_NATIVE", s.ClickHouseNative},
		{"CLICKAGG_CLICKHOUSE_DATABASE", s.Database},
		{"CLICKAGG_ANALYST_USER", s.AnalystUser},
		{AnalystPasswordEnv, s.AnalystPassword},
		{"CLICKAGG_REDIS_ADDR", s.RedisAddr},
		{"CLICKAGG_CLICKHOUSE_UP", strconv.FormatBool(s.ClickHouseUp)},
		{"CLICKAGG_REDIS_UP", strconv.FormatBool(s.RedisUp)},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// state is what Up records in services.json; the PIDs live in PID files.
type state struct {
	ClickHouseHTTPPort   int    `json:"clickhouse_http_port"`
	ClickHouseNativePort int    `json:"clickhouse_native_port"`
	RedisPort            int    `json:"redis_port"`
	Database             string `json:"database"`
}

// layout names the files of one data directory.
type layout struct{ dir string }

func (o Options) layout() (layout, error) {
	dir, err := filepath.Abs(cmp.Or(o.Dir, ".local"))
	if err != nil {
		return layout{}, fmt.Errorf("services dir: %w", err)
	}
	return layout{dir}, nil
}

func (l layout) state() string         { return filepath.Join(l.dir, "services.json") }
func (l layout) clickHouseDir() string { return filepath.Join(l.dir, "clickhouse") }
func (l layout) clickHousePID() string { return filepath.Join(l.dir, "clickhouse.pid") }
func (l layout) redisDir() string      { return filepath.Join(l.dir, "redis") }
func (l layout) redisPID() string      { return filepath.Join(l.dir, "redis.pid") }

// clickHouseMarker and redisMarker are what the command lines of the
// processes contain. redis-server rewrites its own to "redis-server
// 127.0.0.1:PORT", so the working directory has to tell it apart.
func (l layout) clickHouseMarker() string {
	return "--config-file=" + filepath.Join(l.clickHouseDir(), "config.xml")
}

const redisMarker = "redis-server"

func (l layout) readState() (state, error) {
	b, err := os.ReadFile(l.state())
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, fmt.Errorf("read %s: %w", l.state(), ErrNotStarted)
	}
	if err != nil {
		return state{}, fmt.Errorf("read state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, fmt.Errorf("read state %s: %w", l.state(), err)
	}
	return st, nil
}

func (l layout) writeState(st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := writeFileAtomic(l.state(), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// runningPID returns the PID in pidFile if that process is the one this
// package started, else 0.
func runningPID(pidFile, dir, marker string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !owned(pid, dir, marker) {
		return 0
	}
	return pid
}

func writePID(path string, pid int) error {
	if err := writeFileAtomic(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with a file of data and mode perm, so that
// no reader ever sees half of it.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp) // WriteFile keeps the mode of a file left over
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Read returns the state Up recorded, checked against the running
// processes. It returns ErrNotStarted if Up never ran in o.Dir.
func Read(o Options) (Status, error) {
	l, err := o.layout()
	if err != nil {
		return Status{}, err
	}
	st, err := l.readState()
	if err != nil {
		return Status{}, err
	}
	pw, err := l.readAnalystPassword()
	if err != nil {
		return Status{}, err
	}
	s := Status{
		ClickHouseHTTP:   httpURL(st.ClickHouseHTTPPort),
		ClickHouseNative: hostPort(st.ClickHouseNativePort),
		Database:         st.Database,
		RedisAddr:        hostPort(st.RedisPort),
		ClickHousePID:    runningPID(l.clickHousePID(), l.clickHouseDir(), l.clickHouseMarker()),
		RedisPID:         runningPID(l.redisPID(), l.redisDir(), redisMarker),
	}
	if pw != "" {
		s.AnalystUser, s.AnalystPassword = AnalystUser, pw
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.ClickHouseUp = s.ClickHousePID != 0 && pingClickHouse(ctx, s.ClickHouseHTTP) == nil
	s.RedisUp = s.RedisPID != 0 && pingRedis(ctx, s.RedisAddr) == nil
	return s, nil
}

// Up installs what is missing, starts ClickHouse and Redis unless they run
// already, waits until they answer and creates the clickagg database. The
// servers outlive the calling process; Down stops them.
//
// Every Up also writes ClickHouse's users.xml, with the analyst login
// (AnalystUser, reading only the clickagg database; see
// Options.AnalystPassword), and waits until the server lets the analyst in:
// a running server reloads the file, so a new password or new limits take
// effect without a restart.
func Up(ctx context.Context, o Options) (Status, error) {
	l, err := o.layout()
	if err != nil {
		return Status{}, err
	}
	logf := logger(o.Log)
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return Status{}, fmt.Errorf("services dir: %w", err)
	}
	// The directory ignores itself, whatever the repository's .gitignore says.
	if err := os.WriteFile(filepath.Join(l.dir, ".gitignore"), []byte("*\n"), 0o644); err != nil {
		return Status{}, fmt.Errorf("services dir: %w", err)
	}
	unlock, err := l.lock()
	if err != nil {
		return Status{}, err
	}
	defer unlock()
	if !o.NoInstall {
		if err := Install(ctx, o.Log); err != nil {
			return Status{}, err
		}
	}

	st, err := l.readState()
	if err != nil && !errors.Is(err, ErrNotStarted) {
		return Status{}, err
	}
	// Ports asked for win over recorded ones, which win over the defaults.
	want := Ports{
		ClickHouseHTTP:   cmp.Or(o.Ports.ClickHouseHTTP, st.ClickHouseHTTPPort, DefaultClickHouseHTTPPort),
		ClickHouseNative: cmp.Or(o.Ports.ClickHouseNative, st.ClickHouseNativePort, DefaultClickHouseNativePort),
		Redis:            cmp.Or(o.Ports.Redis, st.RedisPort, DefaultRedisPort),
	}
	st.Database = Database

	pw, err := l.analystPassword(o)
	if err != nil {
		return Status{}, err
	}
	analyst := Analyst{Password: pw, Databases: []string{Database}}
	if err := os.MkdirAll(l.clickHouseDir(), 0o755); err != nil {
		return Status{}, fmt.Errorf("clickhouse dir: %w", err)
	}
	if _, err := writeUsers(l.clickHouseDir(), analyst); err != nil {
		return Status{}, err
	}

	err = ensure(ctx, logf, "clickhouse", l.clickHousePID(), l.clickHouseDir(), l.clickHouseMarker(),
		func(ctx context.Context) error { return pingClickHouse(ctx, httpURL(st.ClickHouseHTTPPort)) },
		func() (int, error) {
			httpPort := choosePort(want.ClickHouseHTTP)
			tcpPort := choosePort(want.ClickHouseNative, httpPort)
			logf("starting clickhouse in %s", l.clickHouseDir())
			c, err := startClickHouse(ctx, l.clickHouseDir(), httpPort, tcpPort, analyst, true)
			if err != nil {
				return 0, err
			}
			st.ClickHouseHTTPPort, st.ClickHouseNativePort = c.HTTPPort, c.TCPPort
			return c.PID(), nil
		})
	if err != nil {
		return Status{}, err
	}
	if err := l.writeState(st); err != nil {
		return Status{}, err
	}

	err = ensure(ctx, logf, "redis", l.redisPID(), l.redisDir(), redisMarker,
		func(ctx context.Context) error { return pingRedis(ctx, hostPort(st.RedisPort)) },
		func() (int, error) {
			port := choosePort(want.Redis, st.ClickHouseHTTPPort, st.ClickHouseNativePort)
			logf("starting redis in %s", l.redisDir())
			r, err := startRedis(ctx, l.redisDir(), port, true)
			if err != nil {
				return 0, err
			}
			st.RedisPort = r.Port
			return r.PID(), nil
		})
	if err != nil {
		return Status{}, err
	}
	if err := l.writeState(st); err != nil {
		return Status{}, err
	}

	if _, err := Query(ctx, httpURL(st.ClickHouseHTTPPort), "", "CREATE DATABASE IF NOT EXISTS "+Database); err != nil {
		return Status{}, fmt.Errorf("create database: %w", err)
	}
	ch := &ClickHouse{Dir: l.clickHouseDir()}
	if err := waitAnalyst(ctx, httpURL(st.ClickHouseHTTPPort), analyst, 30*time.Second, ch.failure); err != nil {
		return Status{}, err
	}
	s, err := Read(o)
	if err != nil {
		return Status{}, err
	}
	logf("clickhouse %s (native %s), redis %s", s.ClickHouseHTTP, s.ClickHouseNative, s.RedisAddr)
	return s, nil
}

// ensure waits for the service in pidFile to answer if it runs, or starts it
// and records its PID.
func ensure(ctx context.Context, logf func(string, ...any), name, pidFile, dir, marker string,
	ready func(context.Context) error, start func() (int, error)) error {
	if pid := runningPID(pidFile, dir, marker); pid != 0 {
		logf("%s already running (pid %d)", name, pid)
		err := waitReady(ctx, 30*time.Second, func() bool { return !alive(pid) }, ready)
		if err != nil {
			return fmt.Errorf("%s (pid %d): %w", name, pid, err)
		}
		return nil
	}
	pid, err := start()
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return writePID(pidFile, pid)
}

// choosePort returns preferred if it is free and not taken, else 0 for a
// free port.
func choosePort(preferred int, taken ...int) int {
	for _, t := range taken {
		if t == preferred {
			return 0
		}
	}
	if !portFree(preferred) {
		return 0
	}
	return preferred
}

// Down stops the services Up started, SIGKILL after a grace period, and
// removes their PID files. A PID file whose process is gone or is not the
// one Up started is only removed.
func Down(ctx context.Context, o Options) error {
	l, err := o.layout()
	if err != nil {
		return err
	}
	if _, err := os.Stat(l.dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	logf := logger(o.Log)
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, s := range []struct {
		name, pidFile, dir, marker string
		grace                      time.Duration
	}{
		{"redis", l.redisPID(), l.redisDir(), redisMarker, redisGrace},
		{"clickhouse", l.clickHousePID(), l.clickHouseDir(), l.clickHouseMarker(), clickHouseGrace},
	} {
		if pid := runningPID(s.pidFile, s.dir, s.marker); pid != 0 {
			logf("stopping %s (pid %d)", s.name, pid)
			if err := stopPID(ctx, pid, s.grace); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", s.name, err))
				continue
			}
		}
		if err := os.Remove(s.pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("stop %s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// lock serialises Up and Down on one directory.
func (l layout) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(l.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock services dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock services dir: %w", err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

func logger(w io.Writer) func(string, ...any) {
	if w == nil {
		w = io.Discard
	}
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}
