// Package testenv gives tests real ClickHouse and Redis servers: started on
// free ports in temporary directories, one fresh database per test, all
// cleaned up.
//
// With CLICKAGG_E2E=1 the servers are required and failing to start them
// fails the test. Without it, tests skip when the server binaries are not
// installed. CLICKAGG_TEST_CLICKHOUSE_HTTP and CLICKAGG_TEST_CLICKHOUSE_NATIVE
// point ClickHouse at an external server instead.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/schema"
	"github.com/clickagg/clickagg/services"
)

// startTimeout bounds starting one server; 18.16.1 needs about 2 s.
const startTimeout = time.Minute

// ClickHouseDB is one database on a ClickHouse server.
type ClickHouseDB struct {
	HTTPURL    string               // e.g. "http://127.0.0.1:41234"
	NativeAddr string               // e.g. "127.0.0.1:41235"
	Database   string               // "test_<random hex>"
	Server     *services.ClickHouse // nil for an external server
	// The server's read-only login for SQL analysts (services.AnalystUser),
	// which may read every database; both empty for an external server.
	AnalystUser, AnalystPassword string
}

// The ClickHouse server shared by the tests of one test binary.
var shared struct {
	once sync.Once
	dir  string
	ch   *services.ClickHouse
	err  error
}

var mainCalled atomic.Bool

// Main runs the tests, stops the shared server and exits. Call it from
// TestMain in every package that uses ClickHouse.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	if shared.ch != nil {
		// Kill, not Stop: the data goes anyway and 18.16.1 takes seconds to stop.
		if err := shared.ch.Kill(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: stop clickhouse:", err)
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	stopCluster()
	os.Exit(code)
}

// Must fails t on a server start error, or skips it when the server binaries
// are not installed and CLICKAGG_E2E is not 1.
func Must(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, exec.ErrNotFound) && os.Getenv("CLICKAGG_E2E") != "1" {
		t.Skipf("skipped, set CLICKAGG_E2E=1 to require servers: %v", err)
	}
	t.Fatal(err)
}

// ClickHouse returns a fresh database, dropped at cleanup, on the server
// shared by the test binary (started on first use) or on the external one.
func ClickHouse(t testing.TB) ClickHouseDB {
	t.Helper()
	httpURL, native := os.Getenv("CLICKAGG_TEST_CLICKHOUSE_HTTP"), os.Getenv("CLICKAGG_TEST_CLICKHOUSE_NATIVE")
	db := ClickHouseDB{HTTPURL: strings.TrimSuffix(httpURL, "/"), NativeAddr: native}
	if httpURL == "" || native == "" {
		if !mainCalled.Load() {
			t.Fatal("testenv.ClickHouse needs a TestMain that calls testenv.Main")
		}
		shared.once.Do(startShared)
		Must(t, shared.err)
		db = serverDB(shared.ch)
	}
	createDatabase(t, &db)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := services.Query(ctx, db.HTTPURL, "", "DROP DATABASE IF EXISTS "+db.Database); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return db
}

func startShared() {
	shared.dir, shared.err = os.MkdirTemp("", "clickagg-clickhouse-")
	if shared.err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	shared.ch, shared.err = services.StartClickHouse(ctx, shared.dir, 0, 0)
}

// OwnClickHouse starts a server for this test alone, for tests that stop or
// restart it, with a fresh database. The server goes at cleanup.
func OwnClickHouse(t testing.TB) ClickHouseDB {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	ch, err := services.StartClickHouse(ctx, dir, 0, 0)
	Must(t, err)
	t.Cleanup(func() {
		if err := ch.Kill(); err != nil {
			t.Errorf("stop clickhouse: %v", err)
		}
	})
	db := serverDB(ch)
	createDatabase(t, &db)
	return db
}

func serverDB(ch *services.ClickHouse) ClickHouseDB {
	return ClickHouseDB{
		HTTPURL: ch.HTTPURL(), NativeAddr: ch.NativeAddr(), Server: ch,
		AnalystUser: services.AnalystUser, AnalystPassword: ch.Analyst.Password,
	}
}

// Redis starts a redis-server for this test alone, stopped at cleanup.
func Redis(t testing.TB) *services.Redis {
	t.Helper()
	return startOwn(t, "redis", services.StartRedis)
}

// ZooKeeper starts a standalone ZooKeeper for this test alone (2 s to 60 s
// sessions), stopped at cleanup.
func ZooKeeper(t testing.TB) *services.ZooKeeper {
	t.Helper()
	return startOwn(t, "zookeeper", services.StartZooKeeper)
}

// startOwn starts a server on a free port in a temporary directory, killed
// at cleanup.
func startOwn[S interface{ Kill() error }](t testing.TB, name string, start func(ctx context.Context, dir string, port int) (S, error)) S {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	s, err := start(ctx, dir, 0)
	Must(t, err)
	t.Cleanup(func() {
		if err := s.Kill(); err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
	})
	return s
}

// Exec runs a statement in db and fails the test on error.
func Exec(t testing.TB, db ClickHouseDB, query string) {
	t.Helper()
	if _, err := query1(db, query); err != nil {
		t.Fatal(err)
	}
}

// QueryString runs a query in db and returns its output (TabSeparated unless
// the query says otherwise) without the final newline.
func QueryString(t testing.TB, db ClickHouseDB, query string) string {
	t.Helper()
	out, err := query1(db, query)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(out, "\n")
}

func query1(db ClickHouseDB, query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return services.Query(ctx, db.HTTPURL, db.Database, query)
}

func createDatabase(t testing.TB, db *ClickHouseDB) {
	t.Helper()
	db.Database = "test_" + randomHex()
	if _, err := query1(ClickHouseDB{HTTPURL: db.HTTPURL}, "CREATE DATABASE "+db.Database); err != nil {
		t.Fatal(err)
	}
}

func randomHex() string {
	b := make([]byte, 8)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// Options are the chclient settings of db.
func (db ClickHouseDB) Options() chclient.Options {
	return chclient.Options{HTTP: db.HTTPURL, Native: db.NativeAddr, Database: db.Database}
}

// AnalystOptions are the chclient settings of db for the analyst login. It
// skips t for an external server, whose analyst password testenv does not
// know.
func (db ClickHouseDB) AnalystOptions(t testing.TB) chclient.Options {
	t.Helper()
	if db.AnalystPassword == "" {
		t.Skip("external ClickHouse server: no analyst login known")
	}
	o := db.Options()
	o.User, o.Password = db.AnalystUser, db.AnalystPassword
	return o
}

// Migrated returns a fresh database with the embedded schema applied.
func Migrated(t testing.TB) ClickHouseDB {
	t.Helper()
	return Migrate(t, ClickHouse(t))
}

// Migrate applies the schema migrations to db and returns it.
func Migrate(t testing.TB, db ClickHouseDB) ClickHouseDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := schema.NewMigrator(ctx, db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	return db
}

// Insert commits rows to db's events table through the ingestor.
func Insert(t testing.TB, db ClickHouseDB, rows *ingestor.Rows) {
	t.Helper()
	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: db.HTTPURL, Database: db.Database})
	if err != nil {
		t.Fatal(err)
	}
	in := ingestor.New(tr, ingestor.Options{})
	if err := in.Add(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server the test starts itself.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// browser is the Chromium of the test binary, found or installed once.
var browser struct {
	once sync.Once
	path string
	err  error
}

// Chromium returns the path of Debian's chromium, installing the package
// when it is missing (as the servers' packages are); Must decides between
// skipping and failing when that cannot be done.
func Chromium(t testing.TB) string {
	t.Helper()
	browser.once.Do(func() {
		if browser.path, browser.err = exec.LookPath(services.BrowserPackage); browser.err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := services.InstallPackages(ctx, os.Stderr, services.BrowserPackage); err != nil {
			browser.err = fmt.Errorf("%w: %w", exec.ErrNotFound, err)
			return
		}
		browser.path, browser.err = exec.LookPath(services.BrowserPackage)
	})
	Must(t, browser.err)
	return browser.path
}
