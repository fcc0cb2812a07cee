// Package reconcile compares the streaming answer (what the materialized
// views put into the aggregate tables) with the batch answer (a
// recomputation from raw events, one event per event_id), reports every
// key where they differ and, when asked, writes corrections. Replay
// rebuilds a range of the aggregates from raw events.
//
// Everything is computed in ClickHouse, a UTC day at a time: one query per
// table and day compares both sides, one INSERT ... SELECT per table and day
// writes the corrections. Go only reads the differing keys for the report.
// The truth side groups a day's events by event_id, so its memory grows
// with the events of a day.
//
// On a cluster each shard is reconciled on its own tables, where its
// events are: every copy of an event_id lives on one shard and each
// shard's views aggregate only its events, so a shard's truth is the truth
// of its part of every aggregate, and no node gathers every shard's events.
//
// Concurrent ingest: a block committed while a run reads the two sides can
// be seen on one side and not the other, so one run may report (and with
// fix, correct) a difference that is not real; the next run over the same
// range sees the block on both sides and undoes the correction. It heals
// itself, and ranges that end before now minus the settle time (the
// scheduler's default) avoid nearly all of it, since only late events land
// there.
//
// Copies of one event_id are expected to carry the same event time (a
// resend is the same event). Each range deduplicates the copies whose time
// lies inside it, so a resend with a changed time would count once in each
// range it touches.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/schema"
)

// Options configures a Reconciler. The zero value works.
type Options struct {
	MaxRows      int                  // differing rows kept per table in a Report; default 1000, negative keeps none
	QueryTimeout time.Duration        // bound of one statement; default 30 min
	OnFixed      func(clickagg.Range) // called after corrections were written for a range, so caches can drop answers about it
	// Cluster, when set, is the cluster the tables live on, and Shards
	// are connections to its shards in remote_servers order
	// (chclient.OpenShards; Open makes them): each shard is compared and
	// corrected on its local tables, and the sketches' days are dropped
	// from every node's local table.
	Cluster string
	Shards  []driver.Conn
}

// Reconciler compares and corrects the aggregate tables.
type Reconciler struct {
	conn  driver.Conn
	o     Options
	sides []side
	owned bool // the shards' connections are Open's, closed by Close
}

// side is where one part of the events and their aggregates is compared:
// the server, or a shard's local tables.
type side struct {
	conn   driver.Conn
	shard  int    // from 1; 0 on one server
	suffix string // of the table names
}

// New returns a Reconciler; conn and o.Shards stay owned by the caller.
func New(conn driver.Conn, o Options) *Reconciler {
	if o.MaxRows == 0 {
		o.MaxRows = 1000
	}
	if o.MaxRows < 0 {
		o.MaxRows = 0
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = 30 * time.Minute
	}
	r := &Reconciler{conn: conn, o: o}
	if o.Cluster == "" {
		r.sides = []side{{conn: conn}}
	}
	for i, c := range o.Shards {
		r.sides = append(r.sides, side{conn: c, shard: i + 1, suffix: schema.LocalSuffix})
	}
	return r
}

// Open is New for the database ch locates, opening on a cluster a
// connection pool per shard, which Close closes; conn stays the caller's.
func Open(ctx context.Context, conn driver.Conn, ch chclient.Options, o Options) (*Reconciler, error) {
	o.Cluster, o.Shards = ch.Cluster, nil
	if ch.Cluster != "" {
		shards, err := chclient.OpenShards(ctx, conn, ch)
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		o.Shards = shards
	}
	r := New(conn, o)
	r.owned = true
	return r, nil
}

// Close closes the connections Open made.
func (r *Reconciler) Close() error {
	var errs []error
	if r.owned {
		for _, c := range r.o.Shards {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Run compares ad_stats_minute and dim_stats_minute over rng (whole
// minutes) and ad_stats_daily over the whole UTC days inside rng with the
// deduplicated events, and with fix writes the differences as correction
// rows. After a fix, a Run over the same range reports no differences
// (unless events arrived in between).
func (r *Reconciler) Run(ctx context.Context, rng clickagg.Range, fix bool) (Report, error) {
	rep := Report{Range: rng, StartedAt: time.Now().UTC(), Tables: []TableReport{}}
	wrote, err := r.compareAll(ctx, &rep, fix)
	return r.finish(rep, fix, wrote, err, rng)
}

// Replay rebuilds rng from raw events: the corrections of Run with fix for
// the summing tables (which also fills a table created after the events
// arrived), and top_ads_minute rebuilt for every UTC day rng touches where
// the server keeps it (schema.Sketches); then a rollup, or the sketches,
// complete only from inside rng is recorded complete from rng's start. It
// is idempotent: a second Replay changes nothing.
//
// The sketches are rebuilt by dropping the day's partition and inserting
// the day again from events. Events committed for that day between the two
// statements lose their sketch counts until the next Replay of the day;
// sketches only pick candidates for approximate rankings, whose counts come
// from ad_stats_minute.
func (r *Reconciler) Replay(ctx context.Context, rng clickagg.Range) (Report, error) {
	rep := Report{Range: rng, StartedAt: time.Now().UTC(), Tables: []TableReport{}}
	wrote, err := r.compareAll(ctx, &rep, true)
	if err == nil {
		err = r.rebuildTopAds(ctx, &rep)
		wrote = true // even a failed rebuild may have dropped a day
	}
	if err == nil {
		// The rollups and sketches hold every event of rng now: those
		// complete from inside it are complete from its start.
		err = schema.ExtendRollups(ctx, r.conn, rng.From, rng.To)
	}
	changed := rng
	if days := touchedDays(rng); len(days) > 0 {
		changed = clickagg.Range{From: days[0], To: days[len(days)-1].AddDate(0, 0, 1)}
	}
	return r.finish(rep, true, wrote, err, changed)
}

// compareAll compares every summing table, a UTC day at a time,
// correcting each day of a table before the next when fix is set. wrote
// says some correction was written.
//
// A day at a time because every table is partitioned by day (or month):
// modern servers refuse an INSERT block over max_partitions_per_insert_block
// partitions (100 by default) after writing part of it, so a correction of
// a long range in one statement would fail half done. A day's correction
// touches one partition and is whole or absent; a run that fails part way
// is resumed by running again (the days done compare equal). The truth side
// also holds one day's event ids at a time, not the range's.
func (r *Reconciler) compareAll(ctx context.Context, rep *Report, fix bool) (wrote bool, err error) {
	if err := checkRange(rep.Range); err != nil {
		return false, err
	}
	if len(r.sides) == 0 {
		return false, fmt.Errorf("reconcile: cluster %s without its shards' connections", r.o.Cluster)
	}
	reports := make([]TableReport, len(tables))
	for i, t := range tables {
		reports[i] = TableReport{Table: t.name, From: rep.Range.From.UTC(), To: rep.Range.To.UTC(), Keys: t.keyNames(), Diffs: []Diff{}}
		if t.grain > time.Minute {
			from, to, ok := whole(rep.Range, t.grain)
			reports[i].From, reports[i].To = from, to
			if !ok {
				reports[i] = TableReport{Table: t.name, Keys: t.keyNames(), Diffs: []Diff{}, Note: "skipped: no whole UTC " + grainName(t.grain) + " in the range"}
			}
		}
	}
	defer func() { rep.Tables = append(rep.Tables, reports...) }()
	for _, piece := range dayPieces(rep.Range) {
		for i, t := range tables {
			// A table keyed by hours or days is compared over the whole
			// ones in the piece (a piece is within one day).
			from, to, ok := piece.From, piece.To, true
			if t.grain > time.Minute {
				from, to, ok = whole(piece, t.grain)
			}
			if !ok {
				continue
			}
			for _, sd := range r.sides {
				n, err := r.compare(ctx, sd, t, from, to, &reports[i])
				if err != nil {
					return wrote, err
				}
				if fix && n > 0 {
					if err := r.correct(ctx, sd, t, from, to); err != nil {
						return wrote, err
					}
					wrote = true
				}
			}
		}
	}
	return wrote, nil
}

// dayPieces splits rng at UTC midnights.
func dayPieces(rng clickagg.Range) []clickagg.Range {
	var out []clickagg.Range
	for from := rng.From.UTC(); from.Before(rng.To); {
		to := day(from).AddDate(0, 0, 1)
		if rng.To.Before(to) {
			to = rng.To.UTC()
		}
		out = append(out, clickagg.Range{From: from, To: to})
		from = to
	}
	return out
}

// finish stamps rep and tells OnFixed about the changed range when anything
// was written, even if a later step failed.
func (r *Reconciler) finish(rep Report, fix, wrote bool, err error, changed clickagg.Range) (Report, error) {
	rep.Fixed = fix && err == nil
	if err != nil {
		rep.Err = err.Error()
	}
	rep.FinishedAt = time.Now().UTC()
	if wrote && r.o.OnFixed != nil {
		r.o.OnFixed(changed)
	}
	return rep, err
}

// compare reads the differing keys of t over [from, to) on sd into tr
// and returns how many there are.
func (r *Reconciler) compare(ctx context.Context, sd side, t table, from, to time.Time, tr *TableReport) (n int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.QueryTimeout)
	defer cancel()
	rows, err := sd.conn.Query(ctx, t.reportSQL(sd.suffix), t.args(from, to)...)
	if err != nil {
		return 0, fmt.Errorf("compare %s%s: %w", t.name, sd, err)
	}
	defer rows.Close()
	var (
		strs  = make([]string, len(t.keys))
		times = make([]time.Time, len(t.keys))
		truth clickagg.Counts
		agg   clickagg.Counts
		dest  []any
	)
	for i, c := range t.keys {
		if c.isTime() {
			dest = append(dest, &times[i])
		} else {
			dest = append(dest, &strs[i])
		}
	}
	dest = append(dest, &truth.Impressions, &truth.Clicks, &truth.Conversions, &truth.SpendMicros,
		&agg.Impressions, &agg.Clicks, &agg.Conversions, &agg.SpendMicros)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return n, fmt.Errorf("read %s%s differences: %w", t.name, sd, err)
		}
		n++
		tr.Rows++
		if len(tr.Diffs) >= r.o.MaxRows {
			continue // counted, not kept
		}
		d := Diff{Table: t.name, Shard: sd.shard, Key: make(map[string]string, len(t.keys)), Aggregate: agg, Truth: truth}
		for i, c := range t.keys {
			switch {
			case c.name == "day":
				d.Key[c.name] = times[i].Format(time.DateOnly)
			case c.isTime():
				d.Key[c.name] = times[i].UTC().Format(time.RFC3339)
			default:
				d.Key[c.name] = strs[i]
			}
		}
		tr.Diffs = append(tr.Diffs, d)
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read %s%s differences: %w", t.name, sd, err)
	}
	return n, nil
}

// correct writes the corrections of t over [from, to) on sd. It
// recomputes the differences server-side rather than sending the reported
// rows back: the report may hold only the first MaxRows, and INSERT ...
// VALUES hangs on 18.16 through clickhouse-go.
func (r *Reconciler) correct(ctx context.Context, sd side, t table, from, to time.Time) error {
	ctx, cancel := context.WithTimeout(undeduplicated(ctx), r.o.QueryTimeout)
	defer cancel()
	if err := sd.conn.Exec(ctx, t.correctSQL(sd.suffix), t.args(from, to)...); err != nil {
		return fmt.Errorf("correct %s%s: %w", t.name, sd, err)
	}
	return nil
}

// undeduplicated is ctx for a write that must land even when an identical
// block was written before: a Replicated table drops such a block (within
// its last 100), and a correction undone by a later run and needed again
// is the same block.
func undeduplicated(ctx context.Context) context.Context {
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplicate": 0}))
}

func (sd side) String() string {
	if sd.shard == 0 {
		return ""
	}
	return fmt.Sprintf(" on shard %d", sd.shard)
}

// rebuildTopAds refills top_ads_minute for every day rep.Range touches,
// one day at a time so that each day's gap between drop and insert is
// short; nothing where no view keeps the table (servers before 19).
func (r *Reconciler) rebuildTopAds(ctx context.Context, rep *Report) error {
	rep.Rebuilt = []string{}
	kept, err := schema.Exists(ctx, r.conn, schema.SketchView)
	if err != nil {
		return err
	}
	if !kept {
		rep.NoSketches = true
		return nil
	}
	for _, d := range touchedDays(rep.Range) {
		err := func() error {
			ctx, cancel := context.WithTimeout(undeduplicated(ctx), r.o.QueryTimeout)
			defer cancel()
			drop := "ALTER TABLE top_ads_minute DROP PARTITION "
			if r.o.Cluster != "" {
				drop = "ALTER TABLE top_ads_minute" + schema.LocalSuffix + " ON CLUSTER " + r.o.Cluster + " DROP PARTITION "
			}
			if err := r.conn.Exec(ctx, drop+partition(d)); err != nil {
				return fmt.Errorf("drop top_ads_minute partition %s: %w", partition(d), err)
			}
			for _, sd := range r.sides {
				if err := sd.conn.Exec(ctx, topAdsSQL(sd.suffix), d.Unix(), d.AddDate(0, 0, 1).Unix()); err != nil {
					return fmt.Errorf("rebuild top_ads_minute of %s%s: %w", d.Format(time.DateOnly), sd, err)
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
		rep.Rebuilt = append(rep.Rebuilt, d.Format(time.DateOnly))
	}
	return nil
}
