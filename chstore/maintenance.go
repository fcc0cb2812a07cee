package chstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg/schema"
)

// LoadRecentIDs calls add with the fingerprints (cityHash64 of event_id) of
// the events accepted since `since`, in batches, oldest first: what a
// restarted collector needs to keep recognising resends. It first waits
// for the INSERTs into events that ClickHouse is running to finish: those
// of a predecessor killed mid-flight land after it died, and a client's
// resend of their events must find them.
func (s *Store) LoadRecentIDs(ctx context.Context, since time.Time, add func(at time.Time, fps ...uint64)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := s.waitInserts(ctx, time.Minute); err != nil {
		return 0, fmt.Errorf("load recent ids: %w", err)
	}
	rows, err := s.conn.Query(ctx, "SELECT received_at, fingerprint FROM recent_event_ids WHERE received_at >= toDateTime(?) ORDER BY received_at"+s.settings(), since.Unix())
	if err != nil {
		return 0, fmt.Errorf("load recent ids: %w", err)
	}
	defer rows.Close()
	var (
		n     int
		at    time.Time
		fp    uint64
		batch []uint64
		batAt time.Time
	)
	for rows.Next() {
		if err := rows.Scan(&at, &fp); err != nil {
			return n, fmt.Errorf("load recent ids: %w", err)
		}
		if len(batch) == 4096 || (len(batch) > 0 && !at.Equal(batAt)) {
			add(batAt, batch...)
			batch = batch[:0]
		}
		batAt = at
		batch = append(batch, fp)
		n++
	}
	if len(batch) > 0 {
		add(batAt, batch...)
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("load recent ids: %w", err)
	}
	return n, nil
}

// CommittedIDs tells which of fps (cityHash64 of event_id) were accepted
// within the dedup table's reach, once the INSERTs into events running now
// have finished: what another instance needs to settle the holds of one
// that died (package claims).
func (s *Store) CommittedIDs(ctx context.Context, fps []uint64) (map[uint64]bool, error) {
	if err := s.waitInserts(ctx, time.Minute); err != nil {
		return nil, fmt.Errorf("look up event ids: %w", err)
	}
	in := make(map[uint64]bool, len(fps))
	// In pieces: the SQL text stays under 18.16's max_query_size.
	for len(fps) > 0 {
		n := min(len(fps), 5000)
		set := make([]any, n)
		for i, fp := range fps[:n] {
			set[i] = fp
		}
		err := s.query(ctx, "SELECT DISTINCT fingerprint FROM recent_event_ids WHERE fingerprint IN ?", []any{clickhouse.GroupSet{Value: set}}, func(rows driver.Rows) error {
			var fp uint64
			err := rows.Scan(&fp)
			in[fp] = true
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("look up event ids: %w", err)
		}
		fps = fps[n:]
	}
	return in, nil
}

// waitInserts waits, at most limit, until none of the INSERTs into events
// running now (in any database: 18.16 does not show it) is still running.
func (s *Store) waitInserts(ctx context.Context, limit time.Duration) error {
	running := func() (map[string]bool, error) {
		ids := map[string]bool{}
		err := s.query(ctx, "SELECT query_id FROM "+s.system("processes")+" WHERE query LIKE 'INSERT INTO events%'", nil, func(rows driver.Rows) error {
			var id string
			err := rows.Scan(&id)
			ids[id] = true
			return err
		})
		return ids, err
	}
	waiting, err := running()
	for deadline := time.Now().Add(limit); len(waiting) > 0 && err == nil && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		var now map[string]bool
		if now, err = running(); err == nil {
			for id := range waiting {
				if !now[id] {
					delete(waiting, id)
				}
			}
		}
	}
	return err
}

// DropPartitionsBefore drops the partitions of table whose newest row is
// older than cutoff: retention without TTL, which 18.16 lacks. It returns
// the partitions dropped.
//
// On a cluster it drops them from the local table on every node (ON
// CLUSTER), the partitions listed from every node's system.parts.
func (s *Store) DropPartitionsBefore(ctx context.Context, table string, cutoff time.Time) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	alter := "ALTER TABLE " + table
	if s.o.Cluster != "" {
		table += schema.LocalSuffix
		alter = "ALTER TABLE " + table + " ON CLUSTER " + s.o.Cluster
	}
	var old []string
	err := s.query(ctx, "SELECT partition FROM "+s.system("parts")+" WHERE database = currentDatabase() AND table = ? AND active "+
		"GROUP BY partition HAVING max(max_time) < toDateTime(?)", []any{table, cutoff.Unix()}, func(rows driver.Rows) error {
		var p string
		if err := rows.Scan(&p); err != nil {
			return err
		}
		old = append(old, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", table, err)
	}
	for _, p := range old {
		if err := s.conn.Exec(ctx, alter+" DROP PARTITION "+partitionLiteral(p)); err != nil {
			return nil, fmt.Errorf("drop partition %s of %s: %w", p, table, err)
		}
	}
	return old, nil
}

// system names system.NAME of this server, or on a cluster the same table
// of every node, through the cluster() table function (its hosts and
// credentials are remote_servers'; 18.16 has no clusterAllReplicas).
func (s *Store) system(name string) string {
	if s.o.Cluster == "" {
		return "system." + name
	}
	return "cluster('" + s.o.Cluster + "', system, " + name + ")"
}

// partitionLiteral writes a partition value as system.parts shows it back
// as SQL: numbers bare (toYYYYMMDD), anything else quoted (toStartOfHour).
func partitionLiteral(p string) string {
	if p != "" && strings.Trim(p, "0123456789") == "" {
		return p
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p) + "'"
}
