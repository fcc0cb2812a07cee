package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/queryapi"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// stack is one database and one Redis, served by an instance of clickagg
// that can be restarted (a new process's state: ingestor, dedup set).
type stack struct {
	t     *testing.T
	db    testenv.ClickHouseDB
	conn  driver.Conn
	store *chstore.Store
	cache *cache.Cache
	url   string
	stop  func()
	col   *collector.Collector
	// linger of the ingestor; long lingers keep requests waiting
	linger time.Duration
}

// newStack starts an instance; linger 0 is the tests' default of 10 ms.
func newStack(t *testing.T, linger time.Duration) *stack {
	t.Helper()
	s := &stack{t: t, db: testenv.Migrated(t), linger: linger}
	conn, err := chclient.OpenNative(context.Background(), s.db.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.conn = conn
	s.store = chstore.New(conn, chstore.Options{})
	r := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	// A long in-process tier: an answer not cleared by the instance's own
	// late marks would stay stale through every late-event check.
	s.cache = cache.New(rdb, s.store, cache.Options{LocalTTL: time.Minute})
	s.start()
	t.Cleanup(func() { s.stop() })
	return s
}

type marker struct{ c *cache.Cache }

func (m marker) OnPastCommitted(hours []time.Time) {
	rngs := make([]clickagg.Range, len(hours))
	for i, h := range hours {
		rngs[i] = clickagg.Range{From: h, To: h.Add(time.Hour)}
	}
	m.c.MarkChanged(context.Background(), rngs...)
}

// start brings up a fresh instance: its dedup set reloaded from ClickHouse.
func (s *stack) start() {
	t := s.t
	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: s.db.HTTPURL, Database: s.db.Database})
	if err != nil {
		t.Fatal(err)
	}
	in := ingestor.New(tr, ingestor.Options{Linger: cmp.Or(s.linger, 10*time.Millisecond)})
	seen := dedup.New(dedup.Options{})
	if _, err := s.store.LoadRecentIDs(context.Background(), time.Now().Add(-2*time.Hour), seen.Add); err != nil {
		t.Fatal(err)
	}
	s.col = collector.New(in, collector.Options{Dedup: seen, DeadLetters: tr, Hooks: marker{s.cache}})
	app := queryapi.New(queryapi.Options{Ingest: s.col.Handle, Metrics: s.cache, Direct: s.store})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	s.url = "http://" + ln.Addr().String()
	s.stop = func() {
		app.Shutdown()
		in.Close(context.Background())
	}
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
