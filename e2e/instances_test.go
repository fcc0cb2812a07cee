package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/server"
)

// sharedDedup is the setting of instances that hold event ids in Redis.
func sharedDedup(c *server.Config) { c.SharedDedup = true }

// twoInstances starts two instances with shared dedup on one database (of
// the shared cluster when cluster) and one Redis, and returns them with the
// database to check and a wait for its replicas to be in step (a read
// through a Distributed table may go to either replica).
func twoInstances(t *testing.T, cluster bool) (a, b *stack, db testenv.ClickHouseDB, inStep func()) {
	t.Helper()
	redisAddr := testenv.Redis(t).Addr()
	mk := func() *stack { return &stack{t: t, redisAddr: redisAddr, tune: sharedDedup} }
	a, b = mk(), mk()
	inStep = func() {}
	if cluster {
		cdb := testenv.MigratedCluster(t)
		a.cluster, b.cluster = &cdb, &cdb
		db = cdb.Node(cdb.Cluster.Nodes[0])
		inStep = func() { waitReplicated(t, cdb) }
	} else {
		db = testenv.Migrated(t)
		a.db, b.db = db, db
	}
	for _, s := range []*stack{a, b} {
		s.start()
		t.Cleanup(func() { s.stop() })
	}
	return a, b, db, inStep
}

// TestResendToAnotherInstance: with --dedup-shared, a batch sent to one
// instance and then to the other, or to both at once, is counted once in
// events and in the aggregates as soon as the second answer is in, and the
// answers together report every copy but one as a duplicate. On one server
// and on the 2 x 2 cluster.
func TestResendToAnotherInstance(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name := "one server"
		if cluster {
			name = "2x2 cluster"
		}
		t.Run(name, func(t *testing.T) {
			a, b, db, inStep := twoInstances(t, cluster)
			r := rand.New(rand.NewPCG(41, 42))
			var all []event
			batch := func(first int) ([][]byte, []event) {
				var lines [][]byte
				var evs []event
				for i := first; i < first+300; i++ {
					e := randomEvent(r, i, time.Now().UTC(), time.Hour)
					evs, lines = append(evs, e), append(lines, e.json())
				}
				return lines, evs
			}
			// One after the other: A then B.
			for round := range 5 {
				lines, evs := batch(round * 1000)
				all = append(all, evs...)
				first, second := a, b
				if round%2 == 1 {
					first, second = b, a
				}
				if got := first.post(lines); got.Accepted != len(evs) {
					t.Fatalf("round %d, first instance: %+v", round, got)
				}
				if got := second.post(lines); got.Accepted != 0 || got.Duplicates != len(evs) {
					t.Fatalf("round %d, the same batch to the other instance: %+v, want every event a duplicate", round, got)
				}
				inStep()
				checkEvents(t, db, all)
			}
			// At once, to both.
			for round := 5; round < 25; round++ {
				lines, evs := batch(round * 1000)
				all = append(all, evs...)
				var wg sync.WaitGroup
				answers := make([]answer, 2)
				for i, s := range []*stack{a, b} {
					wg.Go(func() { answers[i] = s.post(lines) })
				}
				wg.Wait()
				if acc, dup := answers[0].Accepted+answers[1].Accepted, answers[0].Duplicates+answers[1].Duplicates; acc != len(evs) || dup != len(evs) {
					t.Fatalf("round %d, both at once: %+v and %+v, want %d accepted and %d duplicates between them", round, answers[0], answers[1], len(evs), len(evs))
				}
			}
			inStep()
			checkStored(t, db, all)
		})
	}
}

// TestSharedDedupRedisDown: with --dedup-shared and Redis stopped, ingest
// answers 503 with Retry-After and a JSON body and commits nothing; once
// Redis is back the same batch is taken, once.
func TestSharedDedupRedisDown(t *testing.T) {
	rs := testenv.Redis(t)
	db := testenv.Migrated(t)
	s := &stack{t: t, db: db, redisAddr: rs.Addr(), tune: func(c *server.Config) {
		c.SharedDedup = true
		c.Claims.LiveTTL = time.Second
	}}
	s.start()
	t.Cleanup(func() { s.stop() })
	r := rand.New(rand.NewPCG(43, 44))
	var evs []event
	var lines [][]byte
	for i := range 200 {
		e := randomEvent(r, i, time.Now().UTC(), time.Hour)
		evs, lines = append(evs, e), append(lines, e.json())
	}
	if err := rs.Stop(); err != nil {
		t.Fatal(err)
	}
	body := bytes.Join(lines, []byte("\n"))
	resp, err := http.Post(s.url+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := readAll(resp)
	raw := string(b)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(raw, "across instances") {
		t.Errorf("post with Redis stopped: %d %q (Retry-After %q), want 503 naming the cause", resp.StatusCode, raw, resp.Header.Get("Retry-After"))
	}
	if n := testenv.QueryString(t, db, "SELECT count() FROM events"); n != "0" {
		t.Errorf("events after the 503: %s, want none", n)
	}
	if err := rs.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ingest taken again with Redis back", func() bool {
		resp, err := http.Post(s.url+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			return false
		}
		readAll(resp)
		return resp.StatusCode == 200
	})
	checkStored(t, db, evs)
}

// TestOneReconcilerAtATime: three instances with --dedup-shared and a
// reconciliation every second: one holds the lease and runs every period,
// the others none; stopped, another takes over within the lease's TTL. On
// one server (the lease in Redis) and on the 2 x 2 cluster (in ZooKeeper).
func TestOneReconcilerAtATime(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name, ttl := "one server", time.Second
		if cluster {
			// 2 s: the test ZooKeeper's shortest session.
			name, ttl = "2x2 cluster", 2*time.Second
		}
		t.Run(name, func(t *testing.T) { oneReconciler(t, cluster, ttl) })
	}
}

func oneReconciler(t *testing.T, cluster bool, ttl time.Duration) {
	redisAddr := testenv.Redis(t).Addr()
	var (
		db, read testenv.ClickHouseDB
		cdb      *testenv.ClusterDB
		inStep   = func() {}
	)
	if cluster {
		c := testenv.MigratedCluster(t)
		cdb, read = &c, c.Node(c.Cluster.Nodes[0])
		inStep = func() { waitReplicated(t, c) }
	} else {
		db = testenv.Migrated(t)
		read = db
	}
	var stacks []*stack
	for range 3 {
		s := &stack{t: t, db: db, cluster: cdb, redisAddr: redisAddr, logs: new(lockedBuffer), tune: func(c *server.Config) {
			c.SharedDedup, c.LeaseTTL = true, ttl
			c.NoReconcile, c.Reconcile.Every, c.Reconcile.NoDaily, c.Reconcile.Lookback = false, time.Second, true, 10*time.Minute
		}}
		s.start()
		t.Cleanup(func() { s.stop() })
		stacks = append(stacks, s)
	}
	holder := func(among []*stack) (n int, who *stack) {
		for _, s := range among {
			if s.srv.LeaseHeld() {
				n, who = n+1, s
			}
		}
		return n, who
	}
	runs := func(s *stack) int {
		n := 0
		for _, r := range s.logs.records(t) {
			if r["msg"] == "reconciled" {
				n++
			}
		}
		return n
	}
	waitFor(t, 10*time.Second, "one instance holding the lease", func() bool { n, _ := holder(stacks); return n == 1 })
	_, first := holder(stacks)
	if cluster {
		want := "/clickagg/" + cdb.Database + "/lease/scheduled"
		if !slices.ContainsFunc(first.logs.records(t), func(r map[string]any) bool {
			return strings.HasPrefix(fmt.Sprint(r["msg"]), "lease taken") && r["key"] == want
		}) {
			t.Errorf("the lease on the cluster is not ZooKeeper's node %s", want)
		}
	}
	// A count no event backs: the reconciler takes it out, once.
	testenv.Exec(t, read, "INSERT INTO ad_stats_minute VALUES (toStartOfMinute(now()) - 420, 'no-such-ad', 'c', 'US', 'banner', 'web', 5, 1, 0, 0)")
	bogus := func() string {
		inStep()
		return testenv.QueryString(t, read, "SELECT sum(impressions) FROM ad_stats_minute WHERE ad_id = 'no-such-ad'")
	}
	before := map[*stack]int{}
	for _, s := range stacks {
		before[s] = runs(s)
	}
	const watch = 5 * time.Second
	time.Sleep(watch)
	for _, s := range stacks {
		got := runs(s) - before[s]
		switch {
		case s == first && (got < 2 || got > 7):
			t.Errorf("the holder reconciled %d times in %v, want about one a second", got, watch)
		case s != first && got != 0:
			t.Errorf("an instance without the lease reconciled %d times", got)
		}
	}
	if n, _ := holder(stacks); n != 1 {
		t.Fatalf("%d instances hold the lease", n)
	}
	waitFor(t, 10*time.Second, "the count no event backs taken out", func() bool { return bogus() == "0" })
	time.Sleep(3 * time.Second)
	if got := bogus(); got != "0" {
		t.Errorf("impressions of an ad without events after several reconciliations: %s, want 0 (a correction applied twice?)", got)
	}

	// The holder goes: another takes over.
	first.stop()
	first.stop = func() {}
	gone := time.Now()
	rest := slices.DeleteFunc(slices.Clone(stacks), func(s *stack) bool { return s == first })
	waitFor(t, 3*ttl, "another instance holding the lease", func() bool { n, _ := holder(rest); return n == 1 })
	took := time.Since(gone)
	_, second := holder(rest)
	n := runs(second)
	waitFor(t, 10*time.Second, "the new holder reconciling", func() bool { return runs(second) > n })
	for _, s := range rest {
		if s != second && runs(s) != before[s] {
			t.Errorf("an instance without the lease reconciled")
		}
	}
	t.Logf("one instance of three reconciled, once a second; its successor took the lease %v after it stopped", took.Round(time.Millisecond))
}

// TestKafkaDrainHandover: two instances with --dedup-shared on a database
// fed by Kafka; the one holding the lease drains the inbox, is stopped
// halfway, and the other takes over from the stored watermark: every event
// of the topic counted once (what the first had counted after its last
// stored watermark is recognised by the shared ids).
func TestKafkaDrainHandover(t *testing.T) {
	db := testenv.Migrated(t)
	redisAddr := testenv.Redis(t).Addr()
	var stacks []*stack
	for range 2 {
		s := &stack{t: t, db: db, redisAddr: redisAddr, tune: func(c *server.Config) {
			c.SharedDedup, c.LeaseTTL = true, time.Second
			c.Kafka.Drain.Settle = 2 * time.Second
		}}
		s.start()
		t.Cleanup(func() { s.stop() })
		stacks = append(stacks, s)
	}
	tp := enableKafka(t, stacks[0], 2)
	waitFor(t, 60*time.Second, "the engine consuming", func() bool { return tp.consumers() > 0 })
	holder := func() *stack {
		for _, s := range stacks {
			if s.srv.LeaseHeld() {
				return s
			}
		}
		return nil
	}
	waitFor(t, 10*time.Second, "an instance holding the lease", func() bool { return holder() != nil })
	first := holder()
	r := rand.New(rand.NewPCG(51, 52))
	lines, valid := mixedStream(r, 0, 3000, time.Now().UTC(), time.Hour)
	tp.produce(lines)
	waitFor(t, 60*time.Second, "the holder draining", func() bool { return first.kafkaStatus().Drain.Accepted > 1000 })
	firstAccepted := first.kafkaStatus().Drain.Accepted
	first.stop()
	first.stop = func() {}
	more, v2 := mixedStream(r, 3000, 3000, time.Now().UTC(), time.Hour)
	tp.produce(more)
	valid = append(valid, v2...)
	want := fmt.Sprint(len(valid))
	var got string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = testenv.QueryString(t, db, "SELECT uniqExactIf(event_id, duplicate = 0) FROM events"); got == want {
			break
		}
	}
	if got != want {
		t.Fatalf("%s of %s events from Kafka counted after the handover", got, want)
	}
	var second *stack
	for _, s := range stacks {
		if s != first {
			second = s
		}
	}
	// Its counters follow the sink's answer, after the rows are visible in
	// events: on 18.16 an INSERT's rows show there before its views have
	// written the aggregates, which are read only once it is answered.
	waitFor(t, 10*time.Second, "the drains' counts adding up", func() bool {
		return firstAccepted+second.kafkaStatus().Drain.Accepted == int64(len(valid))
	})
	checkStored(t, db, valid)
	st := second.kafkaStatus().Drain
	t.Logf("drain handed over: the first instance accepted %d before it stopped; the second drained %d rows from the stored watermark on, %d of them duplicates (what the first had counted after it); each of %d events once",
		firstAccepted, st.Drained, st.Duplicates, len(valid))
}
