package reconcile_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
)

// loadCluster stores the test traffic as serve does on a cluster: routed by
// event_id into the shards' local tables.
func loadCluster(t *testing.T, db testenv.ClusterDB) {
	t.Helper()
	o := db.Options()
	var shards []*ingestor.Ingestor
	for _, urls := range o.Shards {
		f, err := ingestor.NewFailover(urls, ingestor.HTTPOptions{Database: o.Database})
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, ingestor.New(f, ingestor.Options{Table: "events_local", Deduplicated: true, Linger: time.Millisecond}))
	}
	router := ingestor.NewRouter(shards)
	defer router.Close(context.Background())
	var rows ingestor.Rows
	add := func(r *ingestor.Rows) {
		p, err := router.Enqueue(context.Background(), r)
		if err == nil {
			err = p.Wait()
		}
		if err != nil {
			t.Fatal(err)
		}
		r.Reset()
	}
	rows.SetReceived(start)
	for i := range nEvents {
		ev := event(i)
		rows.Append(&ev, false)
	}
	add(&rows)
	rows.SetReceived(start.Add(time.Hour))
	for i := range 100 {
		ev := event(i)
		rows.Append(&ev, true)
	}
	add(&rows)
	rows.SetReceived(start.Add(2 * time.Hour))
	ev := event(slipped)
	rows.Append(&ev, false)
	add(&rows)
}

// TestCluster: on a 2 x 2 cluster, reconciliation through the Distributed
// tables finds the slipped resend in each summing table (both copies live
// on its event_id's shard), fixes it, and replay then changes nothing and
// rebuilds the sketches on every node.
func TestCluster(t *testing.T) {
	db := testenv.MigratedCluster(t)
	loadCluster(t, db)
	first := db.Node(db.Cluster.Nodes[0])
	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := reconcile.New(conn, reconcile.Options{Cluster: db.Cluster.Name})

	rep := run(t, r, wholeRange, false)
	extra := countsOf(event(slipped))
	for _, tbl := range summing {
		want := truth(tbl)
		k := keyString(tbl, rowOf(tbl, event(slipped)))
		checkReport(t, rep, tbl, map[string]diff{k: {add(want[k], extra), want[k]}})
	}
	run(t, r, wholeRange, true)
	for _, tbl := range summing {
		checkEqual(t, tbl+" after the fix", dump(t, first, tbl), truth(tbl))
	}
	if rep := run(t, r, wholeRange, false); rep.Differences() != 0 {
		t.Errorf("after the fix: %d differing rows", rep.Differences())
	}
	rep, err = r.Replay(context.Background(), wholeRange)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differences() != 0 || !slices.Equal(rep.Rebuilt, []string{"2026-11-21", "2026-11-22"}) {
		t.Errorf("replay: %d differing rows, rebuilt %v", rep.Differences(), rep.Rebuilt)
	}
	for _, tbl := range summing {
		checkEqual(t, tbl+" after replay", dump(t, first, tbl), truth(tbl))
	}
	// The sketches: the views had written a row per minute and type on
	// each shard; after the rebuild every minute and type is one row, so
	// the days were dropped on every node.
	var rowsN, keys int
	got := testenv.QueryString(t, first, "SELECT count(), uniqExact(minute, type) FROM top_ads_minute")
	if _, err := fmt.Sscanf(got, "%d\t%d", &rowsN, &keys); err != nil || keys == 0 || rowsN != keys {
		t.Errorf("top_ads_minute after replay: %q (rows, distinct minute x type), want one row each", got)
	}
}
