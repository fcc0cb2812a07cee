package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/server"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// stack is one database and one Redis, served by a server.Server (the type
// `clickagg serve` runs) that can be restarted: a new process's state
// (ingestor, dedup set, cache tier).
type stack struct {
	t         *testing.T
	db        testenv.ClickHouseDB
	redisAddr string
	srv       *server.Server
	url       string
	stop      func()
	// linger of the ingestor; long lingers keep requests waiting
	linger time.Duration
	// logs, when set, gets the server's log as JSON lines
	logs *lockedBuffer
	// cluster, when set, is where the database lives instead of db
	cluster *testenv.ClusterDB
	// tune, when set, changes the configuration before each start
	tune func(*server.Config)
}

// newStack starts an instance; linger 0 is the tests' default of 10 ms.
func newStack(t *testing.T, linger time.Duration) *stack {
	t.Helper()
	s := &stack{t: t, db: testenv.Migrated(t), redisAddr: testenv.Redis(t).Addr(), linger: linger}
	s.start()
	t.Cleanup(func() { s.stop() })
	return s
}

// config is serve's default configuration on the test's servers.
func (s *stack) config() server.Config {
	c := server.DefaultConfig()
	c.Listen = "127.0.0.1:0"
	c.ClickHouse = s.db.Options().WithDefaults()
	if s.cluster != nil {
		c.ClickHouse = s.cluster.Options().WithDefaults()
		c.ZooKeeper = s.cluster.Cluster.ZooKeeper.Addr()
	}
	c.Redis.Addr = s.redisAddr
	c.Ingest.Linger = cmp.Or(s.linger, 10*time.Millisecond)
	// A long in-process tier: an answer not cleared by the instance's own
	// late marks would stay stale through every late-event check.
	c.Cache.LocalTTL = time.Minute
	c.NoReconcile = true // the tests count what the immediate checks did
	c.Kafka.VerifyEvery = 0
	if s.logs != nil {
		c.Logger = slog.New(slog.NewJSONHandler(s.logs, nil))
	}
	if s.tune != nil {
		s.tune(&c)
	}
	return c
}

// start brings up a fresh instance: its dedup set reloaded from ClickHouse.
func (s *stack) start() {
	t := s.t
	srv, err := server.Open(context.Background(), s.config())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	s.srv, s.url = srv, srv.URL()
	s.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		srv.Close()
	}
}

// newClusterStack starts an instance on a fresh database of the shared
// 2 x 2 cluster.
func newClusterStack(t *testing.T) *stack {
	t.Helper()
	db := testenv.MigratedCluster(t)
	s := &stack{t: t, cluster: &db, redisAddr: testenv.Redis(t).Addr()}
	s.start()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *stack) restart() {
	s.stop()
	s.start()
}

type answer struct {
	Accepted, Duplicates, Rejected int
	Errors                         []struct {
		Index          int
		Field, Message string
	}
}

// post sends NDJSON lines, retrying 503s as a client would.
func (s *stack) post(lines [][]byte) answer {
	s.t.Helper()
	body := bytes.Join(lines, []byte("\n"))
	for attempt := 0; ; attempt++ {
		resp, err := http.Post(s.url+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			s.t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < 5 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if resp.StatusCode != 200 {
			s.t.Fatalf("post: %d %s", resp.StatusCode, raw)
		}
		var a answer
		if err := json.Unmarshal(raw, &a); err != nil {
			s.t.Fatal(err)
		}
		return a
	}
}

// get fetches an API path into v.
func (s *stack) get(path string, v any) {
	s.t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		s.t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		s.t.Fatal(err)
	}
}
