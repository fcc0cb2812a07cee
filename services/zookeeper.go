package services

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// zooKeeperJar is the server of Debian's zookeeper package; its manifest
// names the libraries it needs.
const zooKeeperJar = "/usr/share/java/zookeeper.jar"

// slf4jSimpleJar is the logging binding ZooKeeper gets when it is there.
const slf4jSimpleJar = "/usr/share/java/slf4j-simple.jar"

// zooKeeperGrace is how long ZooKeeper may take to stop after SIGTERM.
const zooKeeperGrace = 10 * time.Second

// ZooKeeper is one standalone ZooKeeper server with its config and data
// under Dir, for the replicated tables and ON CLUSTER DDL of a local
// ClickHouse cluster. Debian's zkServer.sh reads /etc/zookeeper/conf
// whatever it is told, so the JVM is started directly.
type ZooKeeper struct {
	Dir  string // absolute
	Port int

	*process
}

// StartZooKeeper writes a config into dir, starts ZooKeeper on port (0: a
// free one) and waits until it serves clients. It dies with this process.
func StartZooKeeper(ctx context.Context, dir string, port int) (*ZooKeeper, error) {
	z, err := startZooKeeper(ctx, dir, port, false)
	if err != nil {
		return nil, fmt.Errorf("start zookeeper: %w", err)
	}
	return z, nil
}

func startZooKeeper(ctx context.Context, dir string, port int, detach bool) (*ZooKeeper, error) {
	java, err := lookBinary("java")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(zooKeeperJar); err != nil {
		return nil, fmt.Errorf("zookeeper: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var z *ZooKeeper
	err = onFreePorts([]int{port}, func(ports []int) error {
		z = &ZooKeeper{Dir: dir, Port: ports[0]}
		if err := z.writeConfig(); err != nil {
			return err
		}
		conf := filepath.Join(dir, "conf")
		classpath := conf + ":" + zooKeeperJar
		// Debian's libslf4j-java ships a binding that logs to stderr, which
		// process keeps in zookeeper.log; without it ZooKeeper logs nothing.
		if _, err := os.Stat(slf4jSimpleJar); err == nil {
			classpath += ":" + slf4jSimpleJar
		}
		z.process = &process{
			name: "zookeeper",
			bin:  java,
			// A small heap: the cluster's metadata is a few megabytes, and the
			// JVM's default is a quarter of the machine.
			args: []string{"-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-Dorg.slf4j.simpleLogger.showDateTime=true",
				"-cp", classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(conf, "zoo.cfg")},
			dir:     dir,
			logPath: filepath.Join(dir, "zookeeper.log"),
			detach:  detach,
			limit:   60 * time.Second,
			grace:   zooKeeperGrace,
			ready:   func(ctx context.Context) error { return pingZooKeeper(ctx, z.Addr()) },
			failure: func() string {
				return lastLine(filepath.Join(dir, "zookeeper.log"), func(l string) bool { return strings.Contains(l, "ERROR") || strings.Contains(l, "Exception") })
			},
		}
		return z.process.Start(ctx)
	})
	if err != nil {
		return nil, err
	}
	return z, nil
}

// Addr is host:port of the client port.
func (z *ZooKeeper) Addr() string { return hostPort(z.Port) }

func (z *ZooKeeper) writeConfig() error {
	conf := filepath.Join(z.Dir, "conf")
	for _, d := range []string{conf, filepath.Join(z.Dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("zookeeper dir: %w", err)
		}
	}
	// Sessions may be as short as 2 s, so that a test can have a killed
	// ClickHouse's session expire quickly (its is_active node goes with it).
	cfg := fmt.Sprintf(`tickTime=1000
minSessionTimeout=2000
maxSessionTimeout=60000
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
`, filepath.Join(z.Dir, "data"), z.Port)
	if err := os.WriteFile(filepath.Join(conf, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("zookeeper zoo.cfg: %w", err)
	}
	return nil
}

// pingZooKeeper asks "srvr", which names the server's mode once it serves
// clients ("ruok" answers "imok" before that, and sessions opened then are
// closed: "ZooKeeperServer not running").
func pingZooKeeper(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "Mode: ") {
		return fmt.Errorf("zookeeper srvr: %q", strings.TrimSpace(string(b)))
	}
	return nil
}
