package testenv_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/services"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestClickHouseFreshDatabases(t *testing.T) {
	outer := testenv.ClickHouse(t)
	var (
		mu    sync.Mutex
		names []string
	)
	t.Run("group", func(t *testing.T) {
		for _, n := range []string{"1", "2"} {
			t.Run(n, func(t *testing.T) {
				t.Parallel()
				db := testenv.ClickHouse(t)
				if db.Server != outer.Server || db.Server == nil {
					t.Errorf("server %p, want the shared %p", db.Server, outer.Server)
				}
				if db.Database == outer.Database {
					t.Errorf("database %s reused", db.Database)
				}
				mu.Lock()
				names = append(names, db.Database)
				mu.Unlock()
				testenv.Exec(t, db, "CREATE TABLE t (n UInt32) ENGINE = MergeTree ORDER BY n")
				testenv.Exec(t, db, "INSERT INTO t VALUES ("+n+")")
				if got := testenv.QueryString(t, db, "SELECT n FROM t"); got != n {
					t.Errorf("SELECT n = %q, want %s", got, n)
				}
			})
		}
	})
	for _, name := range names {
		if got := testenv.QueryString(t, outer, "SELECT count() FROM system.databases WHERE name = '"+name+"'"); got != "0" {
			t.Errorf("database %s not dropped", name)
		}
	}
	// UNION ALL branches may come in either order: sorted.
	if got := testenv.QueryString(t, outer, "SELECT * FROM (SELECT 1 AS n, 'a'\nUNION ALL SELECT 2 AS n, 'b') ORDER BY n"); got != "1\ta\n2\tb" {
		t.Errorf("QueryString = %q", got)
	}
}

func TestExternalClickHouse(t *testing.T) {
	shared := testenv.ClickHouse(t)
	t.Setenv("CLICKAGG_TEST_CLICKHOUSE_HTTP", shared.HTTPURL+"/")
	t.Setenv("CLICKAGG_TEST_CLICKHOUSE_NATIVE", shared.NativeAddr)
	db := testenv.ClickHouse(t)
	if db.Server != nil || db.HTTPURL != shared.HTTPURL || db.Database == shared.Database || db.AnalystPassword != "" {
		t.Errorf("external: %+v", db)
	}
	testenv.Exec(t, db, "CREATE TABLE t (n UInt8) ENGINE = Memory")
}

func TestAnalystLogin(t *testing.T) {
	db := testenv.ClickHouse(t)
	if db.AnalystUser != services.AnalystUser || db.AnalystPassword == "" || db.AnalystPassword != db.Server.Analyst.Password {
		t.Fatalf("analyst login %q %q", db.AnalystUser, db.AnalystPassword)
	}
	testenv.Exec(t, db, "CREATE TABLE t (n UInt8) ENGINE = Memory")
	testenv.Exec(t, db, "INSERT INTO t VALUES (3)")
	conn, err := chclient.Open(db.AnalystOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	var readonly string
	if err := conn.QueryRow(t.Context(), "SELECT sum(n), (SELECT value FROM system.settings WHERE name = 'readonly') FROM t").Scan(&n, &readonly); err != nil || n != 3 || readonly != "1" {
		t.Errorf("as analyst: sum %d, readonly %q, %v", n, readonly, err)
	}
}

func TestOwnClickHouseSurvivesKill(t *testing.T) {
	db := testenv.OwnClickHouse(t)
	if db.Server == nil {
		t.Fatal("no server")
	}
	testenv.Exec(t, db, "CREATE TABLE t (n UInt8) ENGINE = MergeTree ORDER BY n")
	testenv.Exec(t, db, "INSERT INTO t VALUES (7)")
	if err := db.Server.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := db.Server.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := testenv.QueryString(t, db, "SELECT sum(n) FROM t"); got != "7" {
		t.Errorf("sum after restart = %q, want 7", got)
	}
}

func TestRedis(t *testing.T) {
	a, b := testenv.Redis(t), testenv.Redis(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both at %s", a.Addr())
	}
	for _, r := range []interface{ Addr() string }{a, b} {
		conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(conn, "PING\r\n")
		conn.SetDeadline(time.Now().Add(time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil || line != "+PONG\r\n" {
			t.Errorf("PING %s: %q, %v", r.Addr(), line, err)
		}
	}
}

// recorder notes whether Must skipped or failed instead of doing either.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Skipf(string, ...any) {
	if !r.failed {
		r.skipped = true
	}
}

func (r *recorder) Fatal(...any) {
	if !r.skipped {
		r.failed = true
	}
}

func TestMust(t *testing.T) {
	missing := fmt.Errorf("start clickhouse: %w", exec.ErrNotFound)
	for _, c := range []struct {
		e2e          string
		err          error
		skip, failed bool
	}{
		{"", nil, false, false},
		{"", missing, true, false},
		{"1", missing, false, true},
		{"", errors.New("start clickhouse: bad config"), false, true},
	} {
		t.Setenv("CLICKAGG_E2E", c.e2e)
		r := &recorder{TB: t}
		testenv.Must(r, c.err)
		if r.skipped != c.skip || r.failed != c.failed {
			t.Errorf("E2E=%q, %v: skipped %v failed %v, want %v %v", c.e2e, c.err, r.skipped, r.failed, c.skip, c.failed)
		}
	}
}

// The shared cluster gives each test its own database on every node, and
// replicated tables work in it.
func TestCluster(t *testing.T) {
	db := testenv.Cluster(t)
	first := db.Node(db.Cluster.Nodes[0])
	testenv.Exec(t, first, "CREATE TABLE t ON CLUSTER clickagg (n UInt8) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/"+db.Database+"/t', '{replica}') ORDER BY n")
	testenv.Exec(t, first, "INSERT INTO t VALUES (1)")
	peer := db.Node(db.Cluster.Shard(1)[1])
	for deadline := time.Now().Add(30 * time.Second); testenv.QueryString(t, peer, "SELECT count() FROM t") != "1"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not replicated in 30 s")
		}
	}
	other := testenv.Cluster(t)
	if other.Database == db.Database || other.Cluster != db.Cluster {
		t.Errorf("second database %+v", other)
	}
}
