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
	// Shards and Replicas, when either is set, make Up start a cluster
	// (ZooKeeper and Shards × Replicas ClickHouse servers; the other one
	// defaults to 1) instead of one server. Once a directory holds a
	// cluster, Up, Read and Down find it without them.
	Shards, Replicas int
	// SessionTimeout is each cluster node's ZooKeeper session timeout;
	// default DefaultSessionTimeout.
	SessionTimeout time.Duration
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
	ClickHouseUp     bool   // running and answering (every node of a cluster)
	RedisUp          bool   // running and answering

	// A cluster's: empty for one server. ClickHouseHTTP and
	// ClickHouseNative are then those of the first node.
	Cluster     string
	ZooKeeper   string // host:port
	ZooKeeperUp bool
	Nodes       []NodeStatus
}

// Shards are a cluster's HTTP URLs, shard by shard, replica by replica.
func (s Status) Shards() [][]string {
	var out [][]string
	for _, n := range s.Nodes {
		for len(out) < n.Shard {
			out = append(out, nil)
		}
		out[n.Shard-1] = append(out[n.Shard-1], n.HTTP)
	}
	return out
}

// NativeAddrs are a cluster's native addresses, comma-separated, shard by
// shard.
func (s Status) NativeAddrs() string {
	var addrs []string
	for _, n := range s.Nodes {
		addrs = append(addrs, n.Native)
	}
	return strings.Join(addrs, ",")
}

// NodeStatus is one server of a local cluster.
type NodeStatus struct {
	Name           string // "s1r2"
	Shard, Replica int
	HTTP           string // http://127.0.0.1:PORT
	Native         string // 127.0.0.1:PORT
	PID            int
	Up             bool
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
	if s.Cluster == "" {
		return b.String()
	}
	fmt.Fprintf(&b, "CLICKAGG_CLICKHOUSE_CLUSTER=%s\nCLICKAGG_ZOOKEEPER=%s\nCLICKAGG_ZOOKEEPER_UP=%t\n", shellQuote(s.Cluster), shellQuote(s.ZooKeeper), s.ZooKeeperUp)
	for _, n := range s.Nodes {
		key := "CLICKAGG_NODE_" + strings.ToUpper(n.Name)
		fmt.Fprintf(&b, "%[1]s_SHARD=%[2]d\n%[1]s_REPLICA=%[3]d\n%[1]s_HTTP=%[4]s\n%[1]s_NATIVE=%[5]s\n%[1]s_UP=%[6]t\n",
			key, n.Shard, n.Replica, shellQuote(n.HTTP), shellQuote(n.Native), n.Up)
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
	ClickHouseHTTPPort   int           `json:"clickhouse_http_port"`
	ClickHouseNativePort int           `json:"clickhouse_native_port"`
	RedisPort            int           `json:"redis_port"`
	Database             string        `json:"database"`
	Cluster              *clusterState `json:"cluster,omitempty"`
}

// clusterState is a cluster's layout: its nodes keep their ports and
// directories across restarts (replicas find each other by them).
type clusterState struct {
	Name             string      `json:"name"`
	Shards           int         `json:"shards"`
	Replicas         int         `json:"replicas"`
	ZooKeeperPort    int         `json:"zookeeper_port"`
	SessionTimeoutMs int         `json:"session_timeout_ms"`
	Nodes            []nodeState `json:"nodes"`
}

type nodeState struct {
	Shard           int `json:"shard"`
	Replica         int `json:"replica"`
	HTTPPort        int `json:"http_port"`
	TCPPort         int `json:"tcp_port"`
	InterserverPort int `json:"interserver_port"`
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
func (l layout) zooKeeperDir() string  { return filepath.Join(l.dir, "zookeeper") }
func (l layout) zooKeeperPID() string  { return filepath.Join(l.dir, "zookeeper.pid") }
func (l layout) zooKeeperMarker() string {
	return filepath.Join(l.zooKeeperDir(), "conf", "zoo.cfg")
}

// nodeDir and nodePID are a cluster node's directory and PID file.
func (l layout) nodeDir(n Node) string { return filepath.Join(l.dir, "clickhouse-"+n.Name()) }
func (l layout) nodePID(n Node) string { return filepath.Join(l.dir, "clickhouse-"+n.Name()+".pid") }
func nodeMarker(dir string) string     { return "--config-file=" + filepath.Join(dir, "config.xml") }

// nodes rebuilds a recorded cluster's servers (not running) from st.
func (l layout) nodes(st *clusterState, analyst Analyst) []*ClickHouse {
	shards := make([][]int, st.Shards)
	for _, n := range st.Nodes {
		shards[n.Shard-1] = append(shards[n.Shard-1], n.TCPPort)
	}
	var out []*ClickHouse
	for _, n := range st.Nodes {
		node := &Node{Cluster: st.Name, Shard: n.Shard, Replica: n.Replica, InterserverPort: n.InterserverPort,
			ZooKeeperPort: st.ZooKeeperPort, SessionTimeoutMs: st.SessionTimeoutMs, Shards: shards}
		out = append(out, &ClickHouse{Dir: l.nodeDir(*node), HTTPPort: n.HTTPPort, TCPPort: n.TCPPort, Analyst: analyst, Node: node})
	}
	return out
}

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
	s.RedisUp = s.RedisPID != 0 && pingRedis(ctx, s.RedisAddr) == nil
	if st.Cluster == nil {
		s.ClickHouseUp = s.ClickHousePID != 0 && pingClickHouse(ctx, s.ClickHouseHTTP) == nil
		return s, nil
	}
	c := st.Cluster
	s.Cluster, s.ZooKeeper = c.Name, hostPort(c.ZooKeeperPort)
	s.ZooKeeperUp = runningPID(l.zooKeeperPID(), l.zooKeeperDir(), l.zooKeeperMarker()) != 0 && pingZooKeeper(ctx, s.ZooKeeper) == nil
	s.ClickHouseUp = true
	for _, ch := range l.nodes(c, Analyst{}) {
		n := NodeStatus{Name: ch.Node.Name(), Shard: ch.Node.Shard, Replica: ch.Node.Replica, HTTP: ch.HTTPURL(), Native: ch.NativeAddr(),
			PID: runningPID(l.nodePID(*ch.Node), ch.Dir, nodeMarker(ch.Dir))}
		n.Up = n.PID != 0 && pingClickHouse(ctx, n.HTTP) == nil
		s.ClickHouseUp = s.ClickHouseUp && n.Up
		s.Nodes = append(s.Nodes, n)
	}
	first := s.Nodes[0]
	s.ClickHouseHTTP, s.ClickHouseNative, s.ClickHousePID = first.HTTP, first.Native, first.PID
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
		if err := Install(ctx, o.Log, o.Shards > 0 || o.Replicas > 0 || l.hasCluster()); err != nil {
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
	if err := l.checkMode(st, o); err != nil {
		return Status{}, err
	}
	if st.Cluster != nil || o.Shards > 0 || o.Replicas > 0 {
		return l.upCluster(ctx, o, st, analyst, want.Redis, logf)
	}
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

	if err := l.upRedis(ctx, &st, want.Redis, logf); err != nil {
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

// upRedis makes sure Redis runs, preferring port, and records it in st.
func (l layout) upRedis(ctx context.Context, st *state, port int, logf func(string, ...any)) error {
	err := ensure(ctx, logf, "redis", l.redisPID(), l.redisDir(), redisMarker,
		func(ctx context.Context) error { return pingRedis(ctx, hostPort(st.RedisPort)) },
		func() (int, error) {
			taken := []int{st.ClickHouseHTTPPort, st.ClickHouseNativePort}
			if c := st.Cluster; c != nil {
				taken = append(taken, c.ZooKeeperPort)
				for _, n := range c.Nodes {
					taken = append(taken, n.HTTPPort, n.TCPPort, n.InterserverPort)
				}
			}
			logf("starting redis in %s", l.redisDir())
			r, err := startRedis(ctx, l.redisDir(), choosePort(port, taken...), true)
			if err != nil {
				return 0, err
			}
			st.RedisPort = r.Port
			return r.PID(), nil
		})
	if err != nil {
		return err
	}
	return l.writeState(*st)
}

// hasCluster says the directory's recorded services are a cluster.
func (l layout) hasCluster() bool {
	st, err := l.readState()
	return err == nil && st.Cluster != nil
}

// checkMode refuses to turn a directory's one server into a cluster or a
// cluster into another shape: their data would not follow.
func (l layout) checkMode(st state, o Options) error {
	asked := o.Shards > 0 || o.Replicas > 0
	switch c := st.Cluster; {
	case c == nil && asked && runningPID(l.clickHousePID(), l.clickHouseDir(), l.clickHouseMarker()) != 0:
		return fmt.Errorf("%s runs one ClickHouse server: 'services down' first, or use another CLICKAGG_DATA_DIR for a cluster", l.dir)
	case c != nil && asked && (max(o.Shards, 1) != c.Shards || max(o.Replicas, 1) != c.Replicas):
		return fmt.Errorf("%s holds a %d x %d cluster: 'services down' and remove the directory to start a %d x %d one, or use another CLICKAGG_DATA_DIR",
			l.dir, c.Shards, c.Replicas, max(o.Shards, 1), max(o.Replicas, 1))
	}
	return nil
}

// upCluster is Up for a cluster: ZooKeeper, then every node, then Redis,
// the database on every node, and the analyst login on every node.
func (l layout) upCluster(ctx context.Context, o Options, st state, analyst Analyst, redisPort int, logf func(string, ...any)) (Status, error) {
	if st.Cluster == nil {
		co := ClusterOptions{Shards: max(o.Shards, 1), Replicas: max(o.Replicas, 1), SessionTimeout: o.SessionTimeout}.withDefaults()
		ports, err := freePorts(1)
		if err != nil {
			return Status{}, err
		}
		nodes, err := clusterNodes(l.dir, co, ports[0], analyst)
		if err != nil {
			return Status{}, err
		}
		c := &clusterState{Name: ClusterName, Shards: co.Shards, Replicas: co.Replicas, ZooKeeperPort: ports[0],
			SessionTimeoutMs: int(co.SessionTimeout / time.Millisecond)}
		for _, n := range nodes {
			c.Nodes = append(c.Nodes, nodeState{Shard: n.Node.Shard, Replica: n.Node.Replica, HTTPPort: n.HTTPPort, TCPPort: n.TCPPort, InterserverPort: n.Node.InterserverPort})
		}
		st.Cluster = c
		if err := l.writeState(st); err != nil {
			return Status{}, err
		}
	}
	c := st.Cluster
	err := ensure(ctx, logf, "zookeeper", l.zooKeeperPID(), l.zooKeeperDir(), l.zooKeeperMarker(),
		func(ctx context.Context) error { return pingZooKeeper(ctx, hostPort(c.ZooKeeperPort)) },
		func() (int, error) {
			logf("starting zookeeper in %s", l.zooKeeperDir())
			z, err := startZooKeeper(ctx, l.zooKeeperDir(), c.ZooKeeperPort, true)
			if err != nil {
				return 0, err
			}
			return z.PID(), nil
		})
	if err != nil {
		return Status{}, err
	}
	nodes := l.nodes(c, analyst)
	for _, ch := range nodes {
		if err := os.MkdirAll(ch.Dir, 0o755); err != nil {
			return Status{}, fmt.Errorf("clickhouse dir: %w", err)
		}
		if _, err := writeUsers(ch.Dir, analyst); err != nil {
			return Status{}, err
		}
		err := ensure(ctx, logf, "clickhouse "+ch.Node.Name(), l.nodePID(*ch.Node), ch.Dir, nodeMarker(ch.Dir), ch.pingZooKeeper,
			func() (int, error) {
				logf("starting clickhouse %s in %s", ch.Node.Name(), ch.Dir)
				if err := ch.start(ctx, true); err != nil {
					return 0, err
				}
				if err := waitReady(ctx, 60*time.Second, func() bool { return !ch.running() }, ch.pingZooKeeper); err != nil {
					return 0, fmt.Errorf("reach zookeeper: %w", err)
				}
				return ch.PID(), nil
			})
		if err != nil {
			return Status{}, err
		}
	}
	if err := l.upRedis(ctx, &st, redisPort, logf); err != nil {
		return Status{}, err
	}
	if _, err := Query(ctx, nodes[0].HTTPURL(), "", "CREATE DATABASE IF NOT EXISTS "+Database+" ON CLUSTER "+c.Name); err != nil {
		return Status{}, fmt.Errorf("create database: %w", err)
	}
	for _, ch := range nodes {
		if err := waitAnalyst(ctx, ch.HTTPURL(), analyst, 30*time.Second, ch.failure); err != nil {
			return Status{}, err
		}
	}
	s, err := Read(Options{Dir: l.dir})
	if err != nil {
		return Status{}, err
	}
	logf("cluster %s: %d shards x %d replicas, zookeeper %s, redis %s", c.Name, c.Shards, c.Replicas, s.ZooKeeper, s.RedisAddr)
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
	type service struct {
		name, pidFile, dir, marker string
		grace                      time.Duration
	}
	stop := []service{
		{"redis", l.redisPID(), l.redisDir(), redisMarker, redisGrace},
		{"clickhouse", l.clickHousePID(), l.clickHouseDir(), l.clickHouseMarker(), clickHouseGrace},
	}
	// A cluster's nodes, then its ZooKeeper (nodes flush to it as they stop).
	if st, err := l.readState(); err == nil && st.Cluster != nil {
		for _, ch := range l.nodes(st.Cluster, Analyst{}) {
			stop = append(stop, service{"clickhouse " + ch.Node.Name(), l.nodePID(*ch.Node), ch.Dir, nodeMarker(ch.Dir), clickHouseGrace})
		}
		stop = append(stop, service{"zookeeper", l.zooKeeperPID(), l.zooKeeperDir(), l.zooKeeperMarker(), zooKeeperGrace})
	}
	for _, s := range stop {
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
