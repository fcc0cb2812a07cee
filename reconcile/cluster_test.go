package reconcile_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
)

// loadCluster stores the test traffic as serve does on a cluster: routed by
// event_id into the shards' local tables.
func loadCluster(t *testing.T, db testenv.ClusterDB) {
	t.Helper()
	add := clusterAdder(t, db)
	var rows ingestor.Rows
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

// clusterAdder returns a function committing rows (then reset) through a
// router over the shards, closed with the test.
func clusterAdder(t *testing.T, db testenv.ClusterDB) func(*ingestor.Rows) {
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
	t.Cleanup(func() { router.Close(context.Background()) })
	return func(r *ingestor.Rows) {
		p, err := router.Enqueue(context.Background(), r)
		if err == nil {
			err = p.Wait()
		}
		if err != nil {
			t.Fatal(err)
		}
		r.Reset()
	}
}

// TestCluster: on a 2 x 2 cluster, reconciliation shard by shard finds
// the slipped resend in each summing table on its event_id's shard (both
// copies live there), fixes it there, and replay then changes nothing and
// rebuilds the sketches on every node.
func TestCluster(t *testing.T) {
	db := testenv.MigratedCluster(t)
	keepSketches(t, db.Options())
	loadCluster(t, db)
	first := db.Node(db.Cluster.Nodes[0])
	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := reconcile.Open(context.Background(), conn, db.Options(), reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Each shard is compared on its own tables: the slipped resend shows
	// on its event_id's shard, with that shard's part of the key.
	rep := run(t, r, wholeRange, false)
	extra := countsOf(event(slipped))
	shard := shardOf(event(slipped), len(db.Options().Shards))
	for _, tbl := range summing {
		want := table{}
		for i := range nEvents {
			if ev := event(i); shardOf(ev, len(db.Options().Shards)) == shard {
				k := keyString(tbl, rowOf(tbl, ev))
				want[k] = add(want[k], countsOf(ev))
			}
		}
		k := keyString(tbl, rowOf(tbl, event(slipped)))
		checkReport(t, rep, tbl, map[string]diff{k: {add(want[k], extra), want[k]}})
		for _, d := range rep.Table(tbl).Diffs {
			if d.Shard != shard {
				t.Errorf("%s: difference reported on shard %d, the slipped event is on shard %d", tbl, d.Shard, shard)
			}
		}
	}
	run(t, r, wholeRange, true)
	for _, tbl := range summing {
		checkEqual(t, tbl+" after the fix", dump(t, first, tbl), truth(tbl))
	}
	if rep := run(t, r, wholeRange, false); rep.Differences() != 0 {
		t.Errorf("after the fix: %d differing rows", rep.Differences())
	}
	// The same resend slips through again: its correction is the same
	// block as before, which a Replicated table would drop as a duplicate.
	var again ingestor.Rows
	again.SetReceived(start.Add(3 * time.Hour))
	ev := event(slipped)
	again.Append(&ev, false)
	clusterAdder(t, db)(&again)
	if rep := run(t, r, wholeRange, true); rep.Differences() == 0 {
		t.Error("the second slipped resend was not found")
	}
	if rep := run(t, r, wholeRange, false); rep.Differences() != 0 {
		t.Errorf("after fixing the second slipped resend: %d differing rows", rep.Differences())
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
	// The sketches: each shard's were rebuilt from its own events, one row
	// per minute and type on the replica written first (the other fetches
	// it), so the days were dropped there before.
	for sh := 1; sh <= len(db.Options().Shards); sh++ {
		var rowsN, keys int
		got := testenv.QueryString(t, db.Node(db.Cluster.Shard(sh)[0]), "SELECT count(), uniqExact(minute, type) FROM top_ads_minute_local")
		if _, err := fmt.Sscanf(got, "%d\t%d", &rowsN, &keys); err != nil || keys == 0 || rowsN != keys {
			t.Errorf("shard %d: top_ads_minute_local after replay: %q (rows, distinct minute x type), want one row each", sh, got)
		}
	}
}

// shardOf is the shard (from 1) the router sends ev to.
func shardOf(ev clickagg.Event, shards int) int {
	return ingestor.Shard(dedup.Fingerprint(ev.EventID), shards) + 1
}
