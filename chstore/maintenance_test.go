package chstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/internal/testenv"
)

func TestRecentIDsAndRetention(t *testing.T) {
	db := testenv.Migrated(t)
	ctx := context.Background()
	conn, err := chclient.OpenNative(ctx, db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := chstore.New(conn, chstore.Options{})
	testenv.Exec(t, db, "INSERT INTO recent_event_ids SELECT toDateTime('2026-11-20 08:59:59', 'UTC'), 1")
	testenv.Exec(t, db, "INSERT INTO recent_event_ids SELECT toDateTime('2026-11-20 10:30:00', 'UTC') + number, number + 10 FROM system.numbers LIMIT 5000")
	testenv.Exec(t, db, "INSERT INTO dead_letters (received_at, reason, raw) SELECT toDateTime('2026-10-01 00:00:00', 'UTC'), 'future', 'x'")
	testenv.Exec(t, db, "INSERT INTO dead_letters (received_at, reason, raw) SELECT toDateTime('2026-11-20 00:00:00', 'UTC'), 'future', 'y'")

	var got []uint64
	n, err := s.LoadRecentIDs(ctx, time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC), func(at time.Time, fps ...uint64) {
		if at.Before(time.Date(2026, 11, 20, 10, 30, 0, 0, time.UTC)) {
			t.Errorf("loaded an id of %v", at)
		}
		got = append(got, fps...)
	})
	if err != nil || n != 5000 || len(got) != 5000 || got[0] != 10 || got[4999] != 5009 {
		t.Fatalf("loaded %d (%d), err %v", n, len(got), err)
	}

	dropped, err := s.DropPartitionsBefore(ctx, "recent_event_ids", time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC))
	if err != nil || len(dropped) != 1 {
		t.Fatalf("dropped %v, err %v", dropped, err)
	}
	if c := testenv.QueryString(t, db, "SELECT count() FROM recent_event_ids"); c != "5000" {
		t.Errorf("recent ids left: %s", c)
	}
	if _, err := s.DropPartitionsBefore(ctx, "dead_letters", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if c := testenv.QueryString(t, db, "SELECT groupArray(raw) FROM dead_letters"); c != "['y']" {
		t.Errorf("dead letters left: %s", c)
	}
}

// On a cluster, retention finds old partitions on every node and drops
// them from the local tables of all of them; recent ids load from every
// shard.
func TestRetentionOnCluster(t *testing.T) {
	db := testenv.MigratedCluster(t)
	ctx := context.Background()
	conn, err := chclient.OpenNative(ctx, db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := chstore.New(conn, chstore.Options{Cluster: db.Cluster.Name})
	// Old letters on shard 1 only, recent ones on shard 2 only, written to
	// a replica's local table as serve writes them.
	testenv.Exec(t, db.Node(db.Cluster.Shard(1)[0]), "INSERT INTO dead_letters_local (received_at, reason, raw) SELECT toDateTime('2026-10-01 00:00:00', 'UTC'), 'future', 'x'")
	testenv.Exec(t, db.Node(db.Cluster.Shard(2)[1]), "INSERT INTO dead_letters_local (received_at, reason, raw) SELECT toDateTime('2026-11-20 00:00:00', 'UTC'), 'future', 'y'")
	testenv.Exec(t, db.Node(db.Cluster.Shard(2)[0]), "INSERT INTO recent_event_ids_local SELECT toDateTime('2026-11-20 10:30:00', 'UTC') + number, number FROM system.numbers LIMIT 100")
	testenv.Exec(t, db.Node(db.Cluster.Shard(1)[0]), "INSERT INTO recent_event_ids_local SELECT toDateTime('2026-11-20 10:30:00', 'UTC') + number, number + 1000 FROM system.numbers LIMIT 50")
	n, err := s.LoadRecentIDs(ctx, time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC), func(time.Time, ...uint64) {})
	if err != nil || n != 150 {
		t.Fatalf("recent ids from both shards: %d, %v", n, err)
	}
	dropped, err := s.DropPartitionsBefore(ctx, "dead_letters", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || len(dropped) != 1 {
		t.Fatalf("dropped %v, err %v", dropped, err)
	}
	for _, n := range db.Cluster.Nodes {
		node := db.Node(n)
		waitFor(t, func() bool {
			return testenv.QueryString(t, node, "SELECT countIf(raw = 'x') FROM dead_letters_local") == "0"
		})
	}
	if c := testenv.QueryString(t, db.Node(db.Cluster.Nodes[0]), "SELECT groupArray(raw) FROM dead_letters"); c != "['y']" {
		t.Errorf("dead letters left: %s", c)
	}
}

// waitFor polls cond for 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not so after 30 s")
		}
	}
}
