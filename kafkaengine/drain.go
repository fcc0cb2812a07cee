package kafkaengine

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/collector"
)

// Sink takes a batch of messages; *collector.Collector implements it. An
// error means none of the batch is acknowledged.
type Sink interface {
	Messages(ctx context.Context, src clickagg.Source, msgs [][]byte) (collector.Answer, error)
}

// DrainOptions configures a Drain. The zero value works.
type DrainOptions struct {
	// Poll is the pause between looks at the inbox when it is drained;
	// default 200 ms.
	Poll time.Duration
	// IdlePoll is the pause while the inbox has had nothing for Settle (no
	// Kafka traffic, or Kafka not enabled); default 1 s.
	IdlePoll time.Duration
	// Settle is how long after its received_at a row may still become
	// visible (the view stamps rows before their block is written); rows of
	// the last Settle are counted again on every poll. Default 1 minute.
	Settle time.Duration
	// MaxBatch is the most rows passed to the sink at once; default 50000.
	MaxBatch int
	// Timeout bounds each query; default 30 s.
	Timeout time.Duration
	// Cluster is the remote_servers name the database lives on, if any.
	// There the watermark holds while a replica of the inbox is away or
	// behind: the rows a node consumed and had not passed on to its
	// replicas show up when it is back, however late.
	Cluster string
	Logger  *slog.Logger
}

// Defaults of DrainOptions.
const (
	DefaultPoll     = 200 * time.Millisecond
	DefaultIdlePoll = time.Second
	DefaultSettle   = time.Minute
	DefaultMaxBatch = 50000
	DefaultTimeout  = 30 * time.Second
)

// WithDefaults returns o with its zero fields set to the defaults.
func (o DrainOptions) WithDefaults() DrainOptions {
	o.Poll = clickagg.PositiveOr(o.Poll, DefaultPoll)
	o.IdlePoll = clickagg.PositiveOr(o.IdlePoll, DefaultIdlePoll)
	o.Settle = clickagg.PositiveOr(o.Settle, DefaultSettle)
	o.MaxBatch = clickagg.PositiveOr(o.MaxBatch, DefaultMaxBatch)
	o.Timeout = clickagg.PositiveOr(o.Timeout, DefaultTimeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate checks complete options: every duration and the batch positive.
func (o DrainOptions) Validate() error {
	return clickagg.FirstError(
		clickagg.Positive("Poll", o.Poll),
		clickagg.Positive("IdlePoll", o.IdlePoll),
		clickagg.Positive("Settle", o.Settle),
		clickagg.Positive("MaxBatch", o.MaxBatch),
		clickagg.Positive("Timeout", o.Timeout),
	)
}

// hotSeconds is how long the ids of drained rows are remembered, so that a
// second still filling can be drained again without its first rows. A row
// that shows up later than this within Settle makes its whole second go
// through again: the dedup set recognises the events already counted.
const hotSeconds = 10

// Drain passes kafka_inbox through a Sink in order of received_at and keeps
// its progress in kafka_inbox_progress, so a restart goes on where it was.
//
// Every row before the watermark has been drained. A second at or after it
// is done when as many of its rows were drained as the inbox holds; the
// watermark moves up to the oldest second that is not done, but never into
// the last Settle.
type Drain struct {
	conn driver.Conn
	sink Sink
	o    DrainOptions

	progress // of the current Run

	mu        sync.Mutex // guards the fields below, read by Stats
	watermark uint32
	pending   int64 // rows in the inbox not drained, at the last poll
	holding   bool
	lastErr   string
	rate      [2]mark // drained rows at two times, for RowsPerSec

	drained, accepted, duplicates, rejected, errs, late atomic.Int64
}

// progress is what a Run has drained since it started from the stored
// watermark; each Run starts a new one.
type progress struct {
	done      map[uint32]int    // second → rows drained
	seen      map[uint64]uint32 // row id → its second, for seconds from forgotten on
	forgotten uint32            // the ids of seconds before it are forgotten
	idle      bool              // the last poll found no row since the watermark
	checked   time.Time         // when the inbox replicas were last checked
	reason    string            // why they hold the watermark, if they do
	// After a hold, the seconds from the held watermark on are counted
	// again until recheckUntil (recheck, below).
	recheckFrom  uint32
	recheckUntil time.Time
	written      uint32 // watermark last stored
	writtenAt    int64  // drained rows when it was stored
}

func newProgress() progress { return progress{done: map[uint32]int{}, seen: map[uint64]uint32{}} }

// NewDrain returns a Drain reading conn's database and writing to sink.
func NewDrain(conn driver.Conn, sink Sink, o DrainOptions) *Drain {
	o = o.WithDefaults()
	return &Drain{conn: conn, sink: sink, o: o, progress: newProgress()}
}

// DrainStats describe the drain.
type DrainStats struct {
	Watermark   time.Time `json:"watermark"`    // everything received before it is drained
	PendingRows int64     `json:"pending_rows"` // in kafka_inbox, not yet drained
	Drained     int64     `json:"drained_rows"`
	Accepted    int64     `json:"accepted"`
	Duplicates  int64     `json:"duplicates"`
	Rejected    int64     `json:"rejected"`
	RowsPerSec  float64   `json:"rows_per_sec"` // drained, over the last few seconds
	// Holding: on a cluster, the watermark waits for a replica of the
	// inbox that is away or behind (DrainOptions.Cluster).
	Holding bool `json:"holding,omitempty"`
	// LateRows were drained after the watermark had passed their second:
	// found by the recount after a hold.
	LateRows  int64  `json:"late_rows,omitempty"`
	Errors    int64  `json:"errors"`
	LastError string `json:"last_error,omitempty"`
}

// Stats returns running totals.
func (d *Drain) Stats() DrainStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := DrainStats{
		Watermark: time.Unix(int64(d.watermark), 0).UTC(), PendingRows: d.pending,
		Drained: d.drained.Load(), Accepted: d.accepted.Load(), Duplicates: d.duplicates.Load(),
		Rejected: d.rejected.Load(), Errors: d.errs.Load(), LastError: d.lastErr, Holding: d.holding, LateRows: d.late.Load(),
	}
	if a, b := d.rate[0], d.rate[1]; !a.t.IsZero() && b.t.After(a.t) {
		s.RowsPerSec = float64(b.n-a.n) / b.t.Sub(a.t).Seconds()
	}
	return s
}

// Run drains until ctx ends. Errors are counted, logged and retried. Each
// Run starts from the stored progress: between two, another instance may
// have drained (the dedup set shared by instances, package claims,
// recognises the events it counted after its last stored watermark).
func (d *Drain) Run(ctx context.Context) {
	d.mu.Lock()
	d.watermark, d.pending, d.holding = 0, 0, false
	d.mu.Unlock()
	d.progress = newProgress()
	for ctx.Err() == nil {
		more, err := d.Poll(ctx)
		if err != nil && ctx.Err() == nil {
			d.errs.Add(1)
			d.mu.Lock()
			d.lastErr = err.Error()
			d.mu.Unlock()
			d.o.Logger.Warn("kafka inbox drain", "err", err)
		}
		if more && err == nil {
			continue
		}
		pause := d.o.Poll
		if d.idle {
			pause = d.o.IdlePoll
		}
		if err != nil {
			pause = max(pause, time.Second)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// Poll drains one batch; more reports that rows are left.
func (d *Drain) Poll(ctx context.Context) (more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	if d.watermark == 0 {
		if err := d.loadWatermark(ctx); err != nil {
			return false, err
		}
	}
	// Checked before counting: rows counted after a check that found every
	// replica in step include everything older than its lag.
	hold, err := d.behind(ctx)
	if err != nil {
		return false, err
	}
	counts, now, err := d.count(ctx, d.countFrom())
	if err != nil {
		return false, err
	}
	// The seconds to read: from the first that is not done, until MaxBatch.
	var from, to uint32
	var want int
	need := map[uint32]bool{}
	for _, c := range counts {
		if c.n <= d.done[c.sec] {
			continue
		}
		if want > 0 && want+c.n-d.done[c.sec] > d.o.MaxBatch {
			more = true
			break
		}
		if want == 0 {
			from = c.sec
		}
		to, want = c.sec, want+c.n-d.done[c.sec]
		need[c.sec] = true
	}
	if want > 0 {
		if err := d.drain(ctx, from, to, need); err != nil {
			return false, err
		}
	}
	if d.o.Logger.Enabled(ctx, slog.LevelDebug) {
		d.o.Logger.Debug("kafka inbox poll", "watermark", d.watermark, "now", now, "hold", hold, "seconds", len(counts), "need", fmt.Sprint(need), "from", from, "to", to, "recheck_from", d.recheckFrom)
	}
	d.advance(counts, now, hold)
	d.idle = len(counts) == 0
	return more, d.storeWatermark(ctx)
}

type mark struct {
	t time.Time
	n int64
}

type secondCount struct {
	sec uint32
	n   int
}

// countFrom is the first second to count: the watermark, or while a
// recheck lasts the watermark a hold kept.
func (d *Drain) countFrom() uint32 {
	if d.recheckFrom != 0 && time.Now().After(d.recheckUntil) {
		d.recheckFrom = 0
	}
	if d.recheckFrom != 0 {
		return min(d.watermark, d.recheckFrom)
	}
	return d.watermark
}

// count returns the rows per second from second from on, and the server's
// clock, which stamped them.
func (d *Drain) count(ctx context.Context, from uint32) ([]secondCount, uint32, error) {
	var now uint32
	if err := d.conn.QueryRow(ctx, "SELECT toUInt32(now())").Scan(&now); err != nil {
		return nil, 0, fmt.Errorf("read server clock: %w", err)
	}
	rows, err := d.conn.Query(ctx, "SELECT toUInt32(received_at) AS s, count() FROM kafka_inbox "+
		"WHERE received_at >= toDateTime(?) GROUP BY s ORDER BY s"+d.on().ReadSettings(), from)
	if err != nil {
		return nil, 0, fmt.Errorf("count kafka_inbox: %w", err)
	}
	defer rows.Close()
	var out []secondCount
	for rows.Next() {
		var s uint32
		var n uint64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, 0, fmt.Errorf("count kafka_inbox: %w", err)
		}
		out = append(out, secondCount{s, int(n)})
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("count kafka_inbox: %w", err)
	}
	return out, now, nil
}

// drain passes the rows of the needed seconds in [from, to] not drained
// yet to the sink.
func (d *Drain) drain(ctx context.Context, from, to uint32, need map[uint32]bool) error {
	rows, err := d.conn.Query(ctx, "SELECT toUInt32(received_at), id, raw FROM kafka_inbox "+
		"WHERE received_at >= toDateTime(?) AND received_at <= toDateTime(?)"+d.on().ReadSettings(), from, to)
	if err != nil {
		return fmt.Errorf("read kafka_inbox: %w", err)
	}
	defer rows.Close()
	var (
		msgs [][]byte
		ids  []uint64
		secs []uint32
	)
	// A second drained before whose ids are forgotten is drained whole
	// again (the dedup set recognises its events); one whose ids are still
	// remembered, even in part, goes on from them.
	again, known := map[uint32]bool{}, map[uint32]bool{}
	for rows.Next() {
		var s uint32
		var id uint64
		var raw string
		if err := rows.Scan(&s, &id, &raw); err != nil {
			return fmt.Errorf("read kafka_inbox: %w", err)
		}
		if !need[s] {
			continue
		}
		if _, ok := d.seen[id]; ok {
			known[s] = true
			continue
		}
		if d.done[s] > 0 && s < d.forgotten {
			again[s] = true
		}
		msgs, ids, secs = append(msgs, []byte(raw)), append(ids, id), append(secs, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read kafka_inbox: %w", err)
	}
	for s := range again {
		if !known[s] {
			d.done[s] = 0
		}
	}
	if d.o.Logger.Enabled(ctx, slog.LevelDebug) {
		per := map[uint32]int{}
		for _, s := range secs {
			per[s]++
		}
		d.o.Logger.Debug("kafka inbox drain", "rows", fmt.Sprint(per), "again", fmt.Sprint(again), "known", fmt.Sprint(known))
	}
	// One second can hold more rows than the ingestor buffers (a backlog
	// consumed fast): pass them in pieces, remembering each piece's ids so
	// that a failure later in the second does not send it again.
	for len(msgs) > 0 {
		n := min(len(msgs), d.o.MaxBatch)
		ans, err := d.sink.Messages(ctx, clickagg.SourceKafka, msgs[:n])
		if err != nil {
			return fmt.Errorf("commit kafka messages: %w", err)
		}
		d.drained.Add(int64(n))
		d.accepted.Add(int64(ans.Accepted))
		d.duplicates.Add(int64(ans.Duplicates))
		d.rejected.Add(int64(ans.Rejected))
		for i, id := range ids[:n] {
			d.done[secs[i]]++
			d.seen[id] = secs[i]
			if secs[i] < d.watermark {
				d.late.Add(1)
			}
		}
		msgs, ids, secs = msgs[n:], ids[n:], secs[n:]
	}
	return nil
}

// on is the database's place for chclient's read and write settings.
func (d *Drain) on() chclient.Options { return chclient.Options{Cluster: d.o.Cluster} }

// behind reports, on a cluster, that a replica of the inbox may lack rows
// that belong below the watermark (inboxLag, with half of Settle as the
// lag); once it has, until the replicas are quiet. Rows that show up late
// make their seconds go through again, and the dedup set recognises the
// events counted before (reconciliation those past its horizon). Asked at
// most once a second.
func (d *Drain) behind(ctx context.Context) (bool, error) {
	if d.o.Cluster == "" {
		return false, nil
	}
	if time.Since(d.checked) < time.Second {
		return d.reason != "", nil
	}
	reason, quiet, err := inboxLag{d.conn, d.o.Cluster}.check(ctx, d.o.Settle/2)
	if err != nil {
		return false, err
	}
	if reason == "" && d.reason != "" && !quiet {
		reason = "replicas catching up after: " + d.reason
		if strings.HasPrefix(d.reason, "replicas catching up") {
			reason = d.reason
		}
	}
	if reason != "" && d.reason == "" {
		d.o.Logger.Warn("kafka inbox drain holds its watermark", "reason", reason, "watermark", time.Unix(int64(d.watermark), 0).UTC())
	}
	d.checked, d.reason = time.Now(), reason
	return reason != "", nil
}

// recheck is how long, after a hold ends, the seconds it held are still
// counted on every poll: rows of them that show up after the replicas
// looked quiet are drained then, not passed over. Twice the settle time.
func (d *Drain) recheck() time.Duration { return 2 * d.o.Settle }

// advance moves the watermark, unless hold, and forgets what is below it
// (and below a recheck's start).
func (d *Drain) advance(counts []secondCount, now uint32, hold bool) {
	if d.holding && !hold {
		d.recheckFrom, d.recheckUntil = d.watermark, time.Now().Add(d.recheck())
	}
	settle := uint32(d.o.Settle / time.Second)
	wm := max(d.watermark, now-min(now, settle))
	if hold {
		wm = d.watermark
	}
	var pending int64
	for _, c := range counts {
		if left := c.n - d.done[c.sec]; left > 0 {
			pending += int64(left)
			wm = min(wm, c.sec)
		}
	}
	if f := now - min(now, hotSeconds); f > d.forgotten {
		d.forgotten = f
		for id, s := range d.seen {
			if s < f {
				delete(d.seen, id)
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.watermark, d.pending, d.holding = max(d.watermark, wm), pending, hold
	for s := range d.done {
		if s < d.watermark && (d.recheckFrom == 0 || s < d.recheckFrom) {
			delete(d.done, s)
		}
	}
	if t := time.Now(); d.rate[1].t.IsZero() || t.Sub(d.rate[1].t) >= 5*time.Second {
		d.rate[0], d.rate[1] = d.rate[1], mark{t, d.drained.Load()}
	}
}

// loadWatermark starts from the stored progress, or from the oldest row.
func (d *Drain) loadWatermark(ctx context.Context) error {
	var wm, oldest uint32
	err := d.conn.QueryRow(ctx, "SELECT (SELECT toUInt32(max(watermark)) FROM kafka_inbox_progress), "+
		"(SELECT toUInt32(min(received_at)) FROM kafka_inbox)"+d.on().ReadSettings()).Scan(&wm, &oldest)
	if err != nil {
		return fmt.Errorf("read kafka inbox progress: %w", err)
	}
	if wm == 0 {
		wm = max(oldest, 1)
	}
	d.mu.Lock()
	d.watermark, d.written = wm, wm
	d.mu.Unlock()
	return nil
}

// storeWatermark writes the watermark when it moved by 5 s or more and
// rows were drained since: an idle inbox writes nothing (a restart then
// counts an empty stretch again, which costs nothing).
func (d *Drain) storeWatermark(ctx context.Context) error {
	n := d.drained.Load()
	if d.watermark < d.written+5 || n == d.writtenAt {
		return nil
	}
	if err := d.conn.Exec(d.on().WriteContext(ctx), "INSERT INTO kafka_inbox_progress (updated_at, watermark) SELECT now(), toDateTime(?)", d.watermark); err != nil {
		return fmt.Errorf("store kafka inbox progress: %w", err)
	}
	d.written, d.writtenAt = d.watermark, n
	return nil
}
