// Package ingestor batches events into ClickHouse. Rows are appended to
// reusable ch-go proto columns, sealed into a block on max rows, max bytes or
// linger, and sent by a few senders with bounded retries. Add returns only
// once its rows are committed, so the collector never acknowledges an event
// ClickHouse does not have (group commit: concurrent Adds share a block).
package ingestor

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"golang.org/x/sync/semaphore"

	"github.com/clickagg/clickagg"
)

// ErrBufferFull is returned by Add when MaxBufferedRows rows are already
// waiting for ClickHouse and ctx ended before room was made. Callers should
// shed load (HTTP 503) and let the sender retry later.
var ErrBufferFull = errors.New("ingest buffer full")

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("ingestor closed")

// ErrTooLarge is returned by Add for a Rows larger than MaxBufferedRows.
var ErrTooLarge = errors.New("rows exceed the ingest buffer")

// Defaults of Options, for callers that show them (flags, docs).
const (
	DefaultTable           = "events"
	DefaultMaxRows         = 65536
	DefaultMaxBytes        = 32 << 20
	DefaultLinger          = 100 * time.Millisecond
	DefaultMaxInflight     = 2
	DefaultMaxBufferedRows = 262144
	DefaultMaxRetries      = 4
	DefaultBackoff         = 100 * time.Millisecond
	DefaultMaxBackoff      = 2 * time.Second
	DefaultInsertTimeout   = 30 * time.Second
)

// Options configures an Ingestor. The zero value suits about 50k events/s
// into the events table: New fills zero fields with the defaults.
type Options struct {
	Table           string        // default "events"
	MaxRows         int           // rows that seal a block; default 65536
	MaxBytes        int           // estimated bytes that seal a block; default 32 MiB
	Linger          time.Duration // longest wait before a non-full block is sent; default 100 ms
	MaxInflight     int           // concurrent INSERTs; default 2
	MaxBufferedRows int           // rows accepted but not committed before Add blocks; default 262144
	MaxRetries      int           // retries of a failed INSERT after the first try; default 4, -1 for none
	Backoff         time.Duration // first retry delay, doubling with jitter; default 100 ms
	MaxBackoff      time.Duration // default 2 s
	InsertTimeout   time.Duration // one INSERT attempt; default 30 s
	Hooks           Hooks         // optional
	// Deduplicated says the table stores an identical block once
	// (Replicated*MergeTree, within its last 100 blocks): a block whose
	// INSERT lost its answer is sent again as it is, to any replica,
	// instead of probed; when the retries run out, its requests get an
	// UncertainError whose Landed sends it again until ClickHouse takes it.
	Deduplicated bool
}

// WithDefaults returns o with its zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	o.Table = cmp.Or(o.Table, DefaultTable)
	o.MaxRows = clickagg.PositiveOr(o.MaxRows, DefaultMaxRows)
	o.MaxBytes = clickagg.PositiveOr(o.MaxBytes, DefaultMaxBytes)
	o.Linger = clickagg.PositiveOr(o.Linger, DefaultLinger)
	o.MaxInflight = clickagg.PositiveOr(o.MaxInflight, DefaultMaxInflight)
	o.MaxBufferedRows = clickagg.PositiveOr(o.MaxBufferedRows, DefaultMaxBufferedRows)
	o.MaxRetries = cmp.Or(o.MaxRetries, DefaultMaxRetries)
	o.Backoff = clickagg.PositiveOr(o.Backoff, DefaultBackoff)
	o.MaxBackoff = clickagg.PositiveOr(o.MaxBackoff, DefaultMaxBackoff)
	o.InsertTimeout = clickagg.PositiveOr(o.InsertTimeout, DefaultInsertTimeout)
	return o
}

// Validate checks a complete Options, such as one read from flags: every
// size, count and duration positive (New would take a zero for the
// default, which a configuration should say), and a full block fits the
// buffer.
func (o Options) Validate() error {
	return clickagg.FirstError(
		clickagg.NotEmpty("Table", o.Table),
		clickagg.Positive("MaxRows", o.MaxRows),
		clickagg.Positive("MaxBytes", o.MaxBytes),
		clickagg.Positive("Linger", o.Linger),
		clickagg.Between("MaxInflight", o.MaxInflight, 1, 64),
		clickagg.AtLeast("MaxBufferedRows", o.MaxBufferedRows, o.MaxRows, "MaxRows, so that a full block fits"),
		retriesErr(o.MaxRetries),
		clickagg.Positive("Backoff", o.Backoff),
		clickagg.AtLeast("MaxBackoff", o.MaxBackoff, o.Backoff, "Backoff"),
		clickagg.Positive("InsertTimeout", o.InsertTimeout),
	)
}

// retriesErr refuses MaxRetries below -1, and 0, which New takes for the
// default.
func retriesErr(n int) error {
	if n == -1 || n > 0 {
		return nil
	}
	return &clickagg.ConfigError{Field: "MaxRetries", Value: n, Want: "-1 for none, or 1 or more"}
}

// Hooks observe the ingestor, e.g. for metrics; calls are synchronous and
// must be quick.
type Hooks interface {
	OnFlush(FlushInfo)
}

// FlushInfo describes one block sent to ClickHouse.
type FlushInfo struct {
	Rows     int
	Bytes    int // Native-encoded size
	Attempts int
	Duration time.Duration // from the first attempt to the last answer
	Err      error         // nil when committed
}

// Stats are running totals.
type Stats struct {
	BufferedRows  int64 `json:"buffered_rows"` // accepted by Add, not yet committed or failed
	CommittedRows int64 `json:"committed_rows"`
	FailedRows    int64 `json:"failed_rows"`
	Blocks        int64 `json:"blocks"`        // blocks committed
	FailedBlocks  int64 `json:"failed_blocks"` // blocks whose INSERT failed for good
	Retries       int64 `json:"retries"`
	// Recovered counts blocks whose INSERT answer was lost and which are
	// in the table once: found by a probe (not inserted again), or on a
	// Deduplicated table sent again as they were and taken.
	Recovered int64 `json:"recovered"`
}

// result is what the waiters of one block learn; not recycled with the block.
type result struct {
	done chan struct{}
	err  error
}

type block struct {
	rows  Rows
	res   *result
	timer *time.Timer
}

// Ingestor batches Rows into a table. It is safe for concurrent use.
type Ingestor struct {
	o     Options
	t     Transport
	query string
	sem   *semaphore.Weighted

	mu       sync.Mutex
	cond     *sync.Cond // signals senders: queue not empty or stopping
	cur      *block
	queue    []*block
	pending  map[*result]struct{} // sealed, not finished
	free     []*block
	rowsUse  retention // rows per block, for which blocks keep their memory
	closed   bool
	stopping bool

	ctx    context.Context // cancelled when Close gives up on draining
	cancel context.CancelFunc
	wg     sync.WaitGroup

	buffered, committed, failed, blocks, failedBlocks, retries, recovered atomic.Int64
}

// New starts an Ingestor sending through t.
func New(t Transport, o Options) *Ingestor {
	o = o.WithDefaults()
	o.MaxRetries = max(o.MaxRetries, 0) // -1: none
	in := &Ingestor{
		o:       o,
		t:       t,
		query:   "INSERT INTO " + o.Table + " (" + strings.Join(Columns, ", ") + ") FORMAT Native",
		sem:     semaphore.NewWeighted(int64(o.MaxBufferedRows)),
		pending: make(map[*result]struct{}),
		rowsUse: retention{floor: 4096},
	}
	in.cond = sync.NewCond(&in.mu)
	in.ctx, in.cancel = context.WithCancel(context.Background())
	for range o.MaxInflight {
		in.wg.Add(1)
		go in.sender()
	}
	return in
}

// Add appends r and waits until its rows are committed to ClickHouse or
// have failed for good (after the retries; an *UncertainError when they may
// be in the table after all). ctx bounds only the wait for
// buffer room: when it ends first, Add returns ErrBufferFull and nothing of
// r was taken. Once taken, r's rows are all in one INSERT. r may be reused
// when Add returns.
func (in *Ingestor) Add(ctx context.Context, r *Rows) error {
	p, err := in.Enqueue(ctx, r)
	if err != nil {
		return err
	}
	return p.Wait()
}

// Pending is the outcome of rows taken by Enqueue.
type Pending struct {
	res *result
	// A Router's: each shard's part (nil res: its enqueue failed, err).
	parts []part
}

// part is the outcome of the rows one shard took.
type part struct {
	res *result
	err error
}

// Wait blocks until the rows are committed or have failed for good, and
// returns what Add would; for a Router's rows, the errors of the shards
// that failed.
func (p Pending) Wait() error {
	if p.parts == nil {
		if p.res == nil {
			return nil
		}
		<-p.res.done
		return p.res.err
	}
	var errs []error
	for _, pt := range p.parts {
		if err := pt.wait(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (pt part) wait() error {
	if pt.res == nil {
		return pt.err
	}
	<-pt.res.done
	return pt.res.err
}

// Landed reports, after Wait, whether the row with fingerprint fp
// (dedup.Fingerprint of its event_id) is in ClickHouse: its block
// committed, or its outcome was unknown and UncertainError.Landed tells
// (which may wait for ClickHouse). A Router's rows of one shard share
// their shard's outcome.
func (p Pending) Landed(fp uint64) bool {
	err := p.Wait()
	if p.parts != nil {
		err = p.parts[fp%uint64(len(p.parts))].wait()
	}
	var u *UncertainError
	return err == nil || errors.As(err, &u) && u.Landed()
}

// Partial reports whether the rows' outcome may differ from row to row (a
// Router spread them over shards).
func (p Pending) Partial() bool { return p.parts != nil }

// Enqueue is Add without the wait for the commit: it returns once r's rows
// are copied into the open block, so r may be reused (or its memory handed
// on) while the INSERT runs. The returned error is one of Add's refusals
// (ErrBufferFull, ErrTooLarge, ErrClosed); the commit's comes from Wait.
func (in *Ingestor) Enqueue(ctx context.Context, r *Rows) (Pending, error) {
	n := r.Len()
	if n == 0 {
		return Pending{}, nil
	}
	if n > in.o.MaxBufferedRows {
		return Pending{}, fmt.Errorf("%w: %d rows, limit %d", ErrTooLarge, n, in.o.MaxBufferedRows)
	}
	if err := in.sem.Acquire(ctx, int64(n)); err != nil {
		return Pending{}, fmt.Errorf("%w: %v", ErrBufferFull, err)
	}
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		in.sem.Release(int64(n))
		return Pending{}, ErrClosed
	}
	in.buffered.Add(int64(n))
	b := in.current()
	b.rows.AppendRows(r)
	res := b.res
	if b.rows.Len() >= in.o.MaxRows || b.rows.Bytes() >= in.o.MaxBytes {
		in.sealLocked()
	}
	in.mu.Unlock()
	return Pending{res: res}, nil
}

// current returns the open block, starting one (and its linger timer) if
// there is none. in.mu must be held.
func (in *Ingestor) current() *block {
	if in.cur != nil {
		return in.cur
	}
	var b *block
	if n := len(in.free); n > 0 {
		b, in.free = in.free[n-1], in.free[:n-1]
	} else {
		b = new(block)
	}
	res := &result{done: make(chan struct{})}
	b.res = res
	b.timer = time.AfterFunc(in.o.Linger, func() {
		in.mu.Lock()
		if in.cur == b && b.res == res { // not a recycled b's stale timer
			in.sealLocked()
		}
		in.mu.Unlock()
	})
	in.cur = b
	return b
}

// sealLocked hands the open block to the senders. in.mu must be held.
func (in *Ingestor) sealLocked() {
	b := in.cur
	if b == nil {
		return
	}
	in.cur = nil
	b.timer.Stop()
	in.queue = append(in.queue, b)
	in.pending[b.res] = struct{}{}
	in.cond.Signal()
}

// Flush sends the open block and waits until every block sealed before the
// call is committed or failed. It returns the first block error, or ctx's.
func (in *Ingestor) Flush(ctx context.Context) error {
	in.mu.Lock()
	in.sealLocked()
	waits := make([]*result, 0, len(in.pending))
	for r := range in.pending {
		waits = append(waits, r)
	}
	in.mu.Unlock()
	var first error
	for _, r := range waits {
		select {
		case <-r.done:
			if first == nil {
				first = r.err
			}
		case <-ctx.Done():
			return fmt.Errorf("flush: %w", ctx.Err())
		}
	}
	return first
}

// Close stops taking rows, flushes what is buffered and stops the senders.
// When ctx ends before the flush is done, in-flight INSERTs are cancelled
// and their waiters get an error: nothing unacknowledged is reported as
// committed.
func (in *Ingestor) Close(ctx context.Context) error {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	err := in.Flush(ctx)
	if err != nil && ctx.Err() != nil {
		in.cancel()
	}
	in.mu.Lock()
	in.stopping = true
	in.cond.Broadcast()
	in.mu.Unlock()
	in.wg.Wait()
	in.cancel()
	return err
}

// Stats returns running totals.
func (in *Ingestor) Stats() Stats {
	return Stats{
		BufferedRows:  in.buffered.Load(),
		CommittedRows: in.committed.Load(),
		FailedRows:    in.failed.Load(),
		Blocks:        in.blocks.Load(),
		FailedBlocks:  in.failedBlocks.Load(),
		Retries:       in.retries.Load(),
		Recovered:     in.recovered.Load(),
	}
}

func (in *Ingestor) sender() {
	defer in.wg.Done()
	var buf proto.Buffer
	bufUse := retention{floor: 1 << 20}
	for {
		in.mu.Lock()
		for len(in.queue) == 0 && !in.stopping {
			in.cond.Wait()
		}
		if len(in.queue) == 0 {
			in.mu.Unlock()
			return
		}
		b := in.queue[0]
		in.queue[0] = nil
		in.queue = in.queue[1:]
		in.mu.Unlock()

		n := b.rows.Len()
		err := in.send(&buf, &b.rows)
		in.buffered.Add(-int64(n))
		if err != nil {
			in.failed.Add(int64(n))
			in.failedBlocks.Add(1)
		} else {
			in.committed.Add(int64(n))
			in.blocks.Add(1)
		}
		b.res.err = err
		close(b.res.done)
		in.sem.Release(int64(n))

		in.mu.Lock()
		delete(in.pending, b.res)
		b.res = nil
		b.rows.Reset()
		in.rowsUse.observe(n)
		if len(in.free) < in.o.MaxInflight+2 && in.rowsUse.keep(b.rows.capRows()) {
			in.free = append(in.free, b)
		}
		in.mu.Unlock()
		bufUse.observe(len(buf.Buf))
		if !bufUse.keep(cap(buf.Buf)) {
			buf.Buf = nil
		}
	}
}

// send encodes rows and inserts them, retrying temporary failures.
func (in *Ingestor) send(buf *proto.Buffer, rows *Rows) error {
	buf.Reset()
	if err := rows.EncodeNative(buf); err != nil {
		return err
	}
	start := time.Now()
	var err, first error
	attempt := 0
	uncertain := false // an attempt lost its answer and no probe has told since
	lost := false      // Deduplicated: an attempt lost its answer
	for {
		attempt++
		ctx, cancel := context.WithTimeout(in.ctx, in.o.InsertTimeout)
		if uncertain {
			yes, perr := in.landed(ctx, rows)
			if perr == nil && yes {
				cancel()
				err = nil
				break
			}
			// Unknown still: a second copy must not be inserted.
			err, uncertain = perr, perr != nil
		}
		if !uncertain {
			err = in.t.Insert(ctx, in.query, buf.Buf)
			if in.o.Deduplicated {
				lost = lost || answerLost(err)
			} else {
				uncertain = in.maybeLanded(err)
			}
		}
		cancel()
		if first == nil {
			first = err
		}
		if err == nil || attempt > in.o.MaxRetries || !Temporary(err) || in.ctx.Err() != nil {
			break
		}
		in.retries.Add(1)
		select {
		case <-time.After(in.backoff(attempt)):
		case <-in.ctx.Done():
		}
	}
	if in.o.Hooks != nil {
		in.o.Hooks.OnFlush(FlushInfo{Rows: rows.Len(), Bytes: len(buf.Buf), Attempts: attempt, Duration: time.Since(start), Err: err})
	}
	if err == nil && lost {
		in.recovered.Add(1)
	}
	if err != nil {
		if attempt > 1 && first != nil && first.Error() != err.Error() {
			// The first failure is often the cause; the last, its echo.
			err = fmt.Errorf("%w (first attempt: %s)", err, first.Error())
		}
		err = fmt.Errorf("insert %d rows after %d attempts: %w", rows.Len(), attempt, err)
		switch {
		case uncertain:
			return &UncertainError{Err: err, in: in, probe: rows.probeRows()}
		case lost:
			return &UncertainError{Err: err, in: in, resend: bytes.Clone(buf.Buf)}
		}
		return err
	}
	return nil
}

// maybeLanded reports whether a failed INSERT may have reached the server,
// so that only a probe can tell whether the block is in the table. Without
// a Prober the block is simply retried.
func (in *Ingestor) maybeLanded(err error) bool {
	_, ok := in.t.(Prober)
	return ok && answerLost(err)
}

// answerLost reports whether a failed INSERT may have reached the server:
// any network error but a failed connect; ClickHouse saying it does not
// know (a quorum insert that timed out); or a failure after the table took
// the block: ClickHouse writes the views after the table, and an error
// "while pushing to view" (seen: ZooKeeper lost while a replicated view
// allocated its block number) leaves the block in events. A ZooKeeper
// error may come after the table's commit too.
func answerLost(err error) bool {
	var ne *NetError
	var oe *net.OpError
	var se *ServerError
	if errors.As(err, &se) {
		return se.Code == proto.ErrUnknownStatusOfInsert || se.Code == proto.ErrKeeperException ||
			strings.Contains(se.Message, "while pushing to view")
	}
	return errors.As(err, &ne) && !(errors.As(err, &oe) && oe.Op == "dial")
}

// landed asks whether a block whose INSERT lost its answer is in the table
// already, so that retrying would count it twice.
func (in *Ingestor) landed(ctx context.Context, rows *Rows) (bool, error) {
	yes, err := in.t.(Prober).Landed(ctx, in.o.Table, rows.probeRows())
	if err == nil && yes {
		in.recovered.Add(1)
	}
	return yes, err
}

// UncertainError is the failure of a block whose INSERT lost its answer
// and that no probe could find or rule out before the retries ran out
// (ClickHouse went away): its rows may be in the table. Every waiter of
// the block gets the same error.
type UncertainError struct {
	Err    error
	in     *Ingestor
	probe  []ProbeRow
	resend []byte // Deduplicated: the block, sent again instead of probed
	once   sync.Once
	yes    bool
}

func (e *UncertainError) Error() string {
	return "outcome unknown, the rows may be committed: " + e.Err.Error()
}

func (e *UncertainError) Unwrap() error { return e.Err }

// Landed probes, backing off as retries do, until ClickHouse tells whether
// the block is in the table; false when the ingestor is closed first.
// Concurrent callers share one answer.
//
// On a Deduplicated table it sends the block again instead: once ClickHouse
// takes it, it is in the table exactly once (the lost copy, if it landed,
// makes the new one a no-op), so the answer is then true.
func (e *UncertainError) Landed() bool {
	e.once.Do(func() {
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(e.in.ctx, e.in.o.InsertTimeout)
			var yes bool
			var err error
			if e.resend != nil {
				err = e.in.t.Insert(ctx, e.in.query, e.resend)
				yes = err == nil
			} else {
				yes, err = e.in.t.(Prober).Landed(ctx, e.in.o.Table, e.probe)
			}
			cancel()
			if err == nil || !Temporary(err) {
				e.yes = err == nil && yes
				if e.yes {
					e.in.recovered.Add(1)
				}
				return
			}
			select {
			case <-time.After(e.in.backoff(attempt)):
			case <-e.in.ctx.Done():
				return
			}
		}
	})
	return e.yes
}

// backoff is the delay before retry attempt (1-based), with full jitter in
// its upper half so that senders do not retry in lockstep.
func (in *Ingestor) backoff(attempt int) time.Duration {
	d := in.o.Backoff << (attempt - 1)
	if d > in.o.MaxBackoff || d <= 0 {
		d = in.o.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}
