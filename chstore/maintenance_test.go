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
