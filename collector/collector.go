// Package collector is the HTTP ingest endpoint: it decodes a request's
// events, rejects bad ones with per-field errors, and answers only after the
// accepted ones are committed to ClickHouse by the ingestor.
package collector

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sync/semaphore"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/claims"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/eventjson"
	"github.com/clickagg/clickagg/ingestor"
)

// Adder commits rows; *ingestor.Ingestor implements it. Enqueue takes a
// copy of r (r is free for reuse when it returns); the Pending tells the
// commit's outcome.
type Adder interface {
	Enqueue(ctx context.Context, r *ingestor.Rows) (ingestor.Pending, error)
}

// Defaults of Options, for callers that show them (flags, docs).
const (
	DefaultMaxBodyBytes     = 16 << 20
	DefaultMaxDecodedBytes  = 32 << 20
	DefaultMaxEvents        = 100000
	DefaultMaxInflightBytes = 64 << 20
	DefaultQueueTimeout     = 2 * time.Second
	DefaultRetryAfter       = time.Second
	DefaultMaxErrors        = 100
	DefaultAllowedLateness  = 7 * 24 * time.Hour
	DefaultMaxFutureSkew    = 5 * time.Minute
)

// Options configures a Collector. The zero value works: New fills zero
// fields with the defaults.
type Options struct {
	MaxBodyBytes    int // request body as sent; default 16 MiB
	MaxDecodedBytes int // body after gzip; default 32 MiB (about MaxEvents events)
	MaxEvents       int // events per request; default 100000
	// MaxInflightBytes bounds the bodies (as sent and inflated) of the
	// requests being read, decoded and committed at once, so memory under
	// overload stays bounded whatever the number of clients: a request that
	// finds no room gets 503 at once. Each held byte costs about four in the
	// process (body, decoded rows, garbage-collector headroom). Default
	// 64 MiB; at least what one request may hold (MaxBodyBytes plus
	// MaxDecodedBytes), so a lone request meets its own limits, not 503.
	MaxInflightBytes int64
	QueueTimeout     time.Duration // wait for ingest buffer room before 503; default 2 s
	RetryAfter       time.Duration // advertised on 503; default 1 s
	MaxErrors        int           // per-event errors in an answer; default 100
	Now              func() time.Time
	// AllowedLateness is how old an event's ts may be; older events are
	// refused (too_late). Default 7 days, the reconciled dedup horizon.
	AllowedLateness time.Duration
	// MaxFutureSkew is how far ahead of the clock ts may be (future).
	// Default 5 minutes.
	MaxFutureSkew time.Duration
	// Dedup recognises resends; nil counts every event as new.
	Dedup *dedup.Set
	// Shared, with Dedup, holds the ids this instance's set finds new
	// across instances, so that a resend to another one counts once; nil:
	// this instance alone.
	Shared *claims.Set
	// DeadLetters stores refused events and bodies; nil drops them (tests).
	DeadLetters ingestor.Transport
	// DeadLettersTable is the table they go to; default "dead_letters" (a
	// cluster node's is dead_letters_local).
	DeadLettersTable string
	// Hooks observe commits; optional.
	Hooks Hooks
	// Logger gets what has no answer to go to; default none.
	Logger *slog.Logger
}

// WithDefaults returns o with its zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	o.MaxBodyBytes = clickagg.PositiveOr(o.MaxBodyBytes, DefaultMaxBodyBytes)
	o.MaxDecodedBytes = clickagg.PositiveOr(o.MaxDecodedBytes, DefaultMaxDecodedBytes)
	o.MaxEvents = clickagg.PositiveOr(o.MaxEvents, DefaultMaxEvents)
	o.MaxInflightBytes = clickagg.PositiveOr(o.MaxInflightBytes, DefaultMaxInflightBytes)
	o.QueueTimeout = clickagg.PositiveOr(o.QueueTimeout, DefaultQueueTimeout)
	o.RetryAfter = clickagg.PositiveOr(o.RetryAfter, DefaultRetryAfter)
	o.MaxErrors = clickagg.PositiveOr(o.MaxErrors, DefaultMaxErrors)
	o.AllowedLateness = clickagg.PositiveOr(o.AllowedLateness, DefaultAllowedLateness)
	o.MaxFutureSkew = clickagg.PositiveOr(o.MaxFutureSkew, DefaultMaxFutureSkew)
	o.DeadLettersTable = cmp.Or(o.DeadLettersTable, "dead_letters")
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// MinInflightBytes is the least MaxInflightBytes that lets a lone request
// of o's largest size meet its own limits (413) rather than 503.
func (o Options) MinInflightBytes() int64 {
	return int64(o.MaxBodyBytes) + int64(o.MaxDecodedBytes)
}

// Validate checks a complete Options, such as one read from flags: sizes,
// counts and durations positive, and room in flight for the largest
// request.
func (o Options) Validate() error {
	return clickagg.FirstError(
		clickagg.Positive("MaxBodyBytes", o.MaxBodyBytes),
		clickagg.Positive("MaxDecodedBytes", o.MaxDecodedBytes),
		clickagg.Positive("MaxEvents", o.MaxEvents),
		o.inflightErr(),
		clickagg.Positive("QueueTimeout", o.QueueTimeout),
		clickagg.Positive("RetryAfter", o.RetryAfter),
		clickagg.Positive("MaxErrors", o.MaxErrors),
		clickagg.Positive("AllowedLateness", o.AllowedLateness),
		clickagg.Positive("MaxFutureSkew", o.MaxFutureSkew),
	)
}

// inflightErr refuses a MaxInflightBytes below MinInflightBytes, in MiB
// when it is a whole number of them (the flag's unit).
func (o Options) inflightErr() error {
	lo := o.MinInflightBytes()
	if o.MaxInflightBytes >= lo {
		return nil
	}
	want := strconv.FormatInt(lo, 10) + " bytes"
	if lo%(1<<20) == 0 {
		want = strconv.FormatInt(lo>>20, 10) + " MiB"
	}
	return &clickagg.ConfigError{Field: "MaxInflightBytes", Value: o.MaxInflightBytes,
		Want: want + " or more (MaxBodyBytes + MaxDecodedBytes, so that the largest request fits)"}
}

// Hooks observe the collector.
type Hooks interface {
	// OnPastCommitted is called after events were committed into minutes
	// that had already begun before the commit (late events), with the UTC
	// hours holding them, so caches can drop answers about those hours.
	OnPastCommitted(hours []time.Time)
}

// EventError is one rejected event of a request.
type EventError struct {
	Index   int    `json:"index"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Answer is the body of a 200 answer.
type Answer struct {
	Accepted   int          `json:"accepted"`   // new events, committed
	Duplicates int          `json:"duplicates"` // resends of accepted events: stored for the record, not counted again
	Rejected   int          `json:"rejected"`   // refused, in dead_letters
	Errors     []EventError `json:"errors"`
}

// ErrorBody is the body of every non-200 answer.
type ErrorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// Fields whose rejections are counted separately; "json" is an event that
// is not a JSON object at all.
var Fields = []string{"json", "event_id", "type", "ts", "ad_id", "campaign_id", "user_id", "ip", "country", "ad_format", "device", "price_micros"}

// Stats are running totals since start.
type Stats struct {
	Requests   int64            `json:"requests"`
	Accepted   int64            `json:"accepted"`
	Duplicates int64            `json:"duplicates"`
	Rejected   int64            `json:"rejected"`
	ByField    map[string]int64 `json:"rejected_by_field"`
	ByReason   map[string]int64 `json:"rejected_by_reason"`
	BadBodies  int64            `json:"bad_bodies"` // 400, 413
	Shed       int64            `json:"shed"`       // 503
	Failed     int64            `json:"failed"`     // 500
	// DeadLost counts unreadable bodies that could not be stored in
	// dead_letters (refused events never are: their request gets 503).
	DeadLost int64 `json:"dead_letters_lost"`
}

// Collector handles POST /v1/events.
type Collector struct {
	o        Options
	add      Adder
	state    sync.Pool // *request
	works    sync.Pool // *work
	inflight *semaphore.Weighted

	requests, accepted, duplicates, rejected, badBodies, shed, failed, deadLost atomic.Int64

	byField  []atomic.Int64  // indexed like Fields
	byReason [8]atomic.Int64 // indexed by clickagg.RejectReason

	settling sync.WaitGroup // claims settled after the answer
}

// WaitSettled waits until the claims of answered requests are settled
// (after the ingestor has closed: their outcomes are known then).
func (c *Collector) WaitSettled() { c.settling.Wait() }

// request is the reusable per-request state.
type request struct {
	w        *work // until the rows are enqueued
	dead     ingestor.DeadLetters
	fps      []uint64
	verdicts []dedup.Verdict
	fresh    []uint64 // the ids the local set found new, for Shared
	freshAt  []int    // their indexes in fps
	sharedV  []dedup.Verdict
	hours    []time.Time
	now      time.Time
	oldest   time.Time // ts bounds of this request: AllowedLateness, MaxFutureSkew
	newest   time.Time
	ev       clickagg.Event // for Messages
	rejected [16]int64      // by field, added to the totals only when answered
	reasons  [8]int64       // by clickagg.RejectReason
	ans      Answer
}

// work is the memory of reading, decoding and enqueueing a request's
// events, pooled apart from the request and handed back as soon as the rows
// are copied into the ingestor's block. A request then waits for its commit
// (most of its life) holding kilobytes instead of its events three times
// over (body, rows, block), so memory no longer grows with the requests in
// flight, that is with ClickHouse's latency: a soak showed RSS creeping up
// as INSERTs slowed while the table grew.
type work struct {
	dec  eventjson.Decoder
	rows ingestor.Rows
	raw  bytes.Buffer // body as sent, when streamed
	body bytes.Buffer // body inflated
	gz   *gzip.Reader
}

// New returns a Collector committing through add.
func New(add Adder, o Options) *Collector {
	o = o.WithDefaults()
	// Reads past a limit take one byte more to see it (readMetered), on
	// each of the two bodies.
	o.MaxInflightBytes = max(o.MaxInflightBytes, o.MinInflightBytes()+2)
	c := &Collector{o: o, add: add, byField: make([]atomic.Int64, len(Fields)), inflight: semaphore.NewWeighted(o.MaxInflightBytes)}
	c.state.New = func() any { return new(request) }
	c.works.New = func() any { return new(work) }
	return c
}

// Handle is the Fiber handler of POST /v1/events.
func (c *Collector) Handle(ctx *fiber.Ctx) error {
	c.requests.Add(1)
	r := c.get()
	defer c.put(r)
	// Every byte held for this request (body as sent, then inflated) is
	// taken from MaxInflightBytes before it is read, or the answer is 503 at
	// once: memory under overload stays bounded by the budget, not by the
	// number of clients.
	held := meter{sem: c.inflight}
	defer held.release()
	raw, status, err := c.readBody(ctx, r, &held)
	if err != nil {
		if status == fiber.StatusBadRequest { // a body that failed to read cannot be read away
			ctx.Context().SetConnectionClose()
		} else {
			c.discardBody(ctx)
		}
		if errors.Is(err, errOverloaded) {
			return c.addFailed(ctx, err)
		}
		return c.badBody(ctx, status, err.Error())
	}

	body := raw
	switch enc := string(ctx.Request().Header.Peek(fiber.HeaderContentEncoding)); enc {
	case "", "identity":
	case "gzip":
		var status int
		var err error
		if body, status, err = c.gunzip(r, raw, &held); err != nil {
			if errors.Is(err, errOverloaded) {
				return c.addFailed(ctx, err)
			}
			return c.badBody(ctx, status, err.Error())
		}
	default:
		return c.badBody(ctx, fiber.StatusUnsupportedMediaType, "unsupported Content-Encoding "+strconv.Quote(enc)+" (use gzip or none)")
	}

	now := c.o.Now().UTC()
	c.begin(r, now)
	err = r.w.dec.Each(body, func(i int, raw []byte, ev *clickagg.Event, err error) error {
		if i >= c.o.MaxEvents {
			return errTooMany
		}
		return c.take(r, clickagg.SourceHTTP, i, raw, ev, err)
	})
	switch {
	case errors.Is(err, errTooMany):
		return c.badBody(ctx, fiber.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d events in one request", c.o.MaxEvents))
	case err != nil:
		r.dead.Reset()
		r.dead.Append(now, clickagg.SourceHTTP, clickagg.ReasonUnparsableBody, "", err.Error(), "", body)
		// The sender is told what is wrong either way; a body that could not
		// be kept is counted rather than failing the answer.
		if c.storeDead(&r.dead) != nil {
			c.deadLost.Add(1)
		}
		return c.badBody(ctx, fiber.StatusBadRequest, err.Error())
	}

	if err := c.commit(r, now); err != nil {
		return c.addFailed(ctx, err)
	}
	c.tally(r)
	return ctx.JSON(&r.ans)
}

// Messages commits a batch of messages that hold one JSON event each (what
// Kafka carries), exactly as Handle commits a request: new events counted,
// resends marked, bad ones in dead_letters with src. An error means nothing
// of the batch is acknowledged and all of it must be offered again; a resend
// is then recognised as such.
func (c *Collector) Messages(ctx context.Context, src clickagg.Source, msgs [][]byte) (Answer, error) {
	r := c.get()
	defer c.put(r)
	now := c.o.Now().UTC()
	c.begin(r, now)
	for i, m := range msgs {
		r.ev = clickagg.Event{} // a message that is not JSON leaves it as it was
		err := r.w.dec.Decode(m, &r.ev)
		if err := c.take(r, src, i, m, &r.ev, err); err != nil {
			return Answer{}, err
		}
	}
	if err := c.commit(r, now); err != nil {
		return Answer{}, err
	}
	c.tally(r)
	ans := r.ans
	ans.Errors = append([]EventError(nil), r.ans.Errors...)
	return ans, nil
}

// begin readies r for a new request received at now.
func (c *Collector) begin(r *request, now time.Time) {
	r.oldest, r.newest = now.Add(-c.o.AllowedLateness), now.Add(c.o.MaxFutureSkew)
	r.w.rows.Reset()
	r.w.rows.SetReceived(now)
	r.dead.Reset()
	r.fps = r.fps[:0]
	r.ans = Answer{Errors: r.ans.Errors[:0]}
	r.rejected, r.reasons = [16]int64{}, [8]int64{}
	r.now = now
}

// take sorts one decoded event of r into its rows or its dead letters.
func (c *Collector) take(r *request, src clickagg.Source, i int, raw []byte, ev *clickagg.Event, err error) error {
	reason := clickagg.ReasonInvalidField
	var fe *clickagg.FieldError
	switch {
	case err == nil && ev.Time.Before(r.oldest):
		reason, fe = clickagg.ReasonTooLate, &clickagg.FieldError{Field: "ts", Message: "older than the allowed lateness of " + c.o.AllowedLateness.String()}
	case err == nil && ev.Time.After(r.newest):
		reason, fe = clickagg.ReasonFuture, &clickagg.FieldError{Field: "ts", Message: "more than " + c.o.MaxFutureSkew.String() + " ahead of the server clock"}
	case err == nil:
		r.w.rows.Append(ev, false)
		if c.o.Dedup != nil {
			r.fps = append(r.fps, dedup.Fingerprint(ev.EventID))
		}
		return nil
	case !errors.As(err, &fe):
		return err
	case fe.Field == "":
		reason = clickagg.ReasonInvalidJSON
	}
	r.ans.Rejected++
	r.rejected[fieldIndex(fe.Field)]++
	r.reasons[reason]++
	field := fe.Field
	if field == "" {
		field = "json"
	}
	if len(r.ans.Errors) < c.o.MaxErrors {
		r.ans.Errors = append(r.ans.Errors, EventError{Index: i, Field: field, Message: fe.Message})
	}
	r.dead.Append(r.now, src, reason, fe.Field, fe.Message, ev.EventID, raw)
	return nil
}

// tally adds an answered request to the running totals; rejections count
// only once the request is answered, so a resent one is not counted twice.
func (c *Collector) tally(r *request) {
	c.accepted.Add(int64(r.ans.Accepted))
	c.duplicates.Add(int64(r.ans.Duplicates))
	c.rejected.Add(int64(r.ans.Rejected))
	for i, n := range r.rejected[:len(Fields)] {
		if n > 0 {
			c.byField[i].Add(n)
		}
	}
	for i, n := range r.reasons {
		if n > 0 {
			c.byReason[i].Add(n)
		}
	}
}

var errTooMany = errors.New("too many events")

// errOverloaded: the requests in flight hold MaxInflightBytes.
var errOverloaded = errors.New("too many requests in flight")

// errResend means the request's events are committed, but some of its
// event ids were held by another request whose commit failed: this copy was
// stored as a duplicate, so the sender must resend for it to count.
var errResend = errors.New("a concurrent request holding some of these event ids failed; resend")

// errShared: the ids could not be held across instances.
var errShared = errors.New("event ids could not be checked across instances")

// claimShared holds across instances the ids the local claim found new;
// those another instance holds or committed become InFlight or Duplicate
// in r.verdicts and are let go by the local claim.
func (c *Collector) claimShared(r *request, claim *dedup.Claim) (*claims.Claim, error) {
	r.fresh, r.freshAt = r.fresh[:0], r.freshAt[:0]
	for i, v := range r.verdicts {
		if v == dedup.Fresh {
			r.fresh, r.freshAt = append(r.fresh, r.fps[i]), append(r.freshAt, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.o.QueueTimeout)
	defer cancel()
	shared, vs, err := c.o.Shared.Claim(ctx, r.fresh, r.sharedV)
	r.sharedV = vs
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errShared, err)
	}
	var elsewhere, done []uint64
	for j, v := range vs {
		if v == dedup.Fresh {
			continue
		}
		r.verdicts[r.freshAt[j]] = v
		elsewhere = append(elsewhere, r.fresh[j])
		if v == dedup.Duplicate {
			done = append(done, r.fresh[j])
		}
	}
	c.o.Dedup.Release(claim, elsewhere)
	c.o.Dedup.Add(r.now, done...)
	return shared, nil
}

// settleShared records the outcome of the shared claim, retrying for a
// minute: while it stands unsettled, other instances wait on its ids.
func (c *Collector) settleShared(shared *claims.Claim, committed func(uint64) bool) {
	if shared == nil {
		return
	}
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		ctx, cancel := context.WithTimeout(context.Background(), c.o.QueueTimeout)
		err := shared.Settle(ctx, committed)
		cancel()
		if err == nil || wait > time.Minute {
			if err != nil {
				c.o.Logger.Error("event ids held across instances not settled: resends of them wait until this instance is gone", "ids", len(shared.Fps()), "err", err)
			}
			return
		}
		time.Sleep(wait)
	}
}

// commit marks resends, commits the rows, then the dead letters, and
// settles the request's claim on its event ids.
func (c *Collector) commit(r *request, now time.Time) error {
	var claim *dedup.Claim
	var shared *claims.Claim
	if c.o.Dedup != nil && len(r.fps) > 0 {
		claim, r.verdicts = c.o.Dedup.Check(r.fps, r.verdicts)
		if c.o.Shared != nil {
			var err error
			if shared, err = c.claimShared(r, claim); err != nil {
				c.o.Dedup.Settle(claim, false)
				return err
			}
		}
		for i, v := range r.verdicts {
			if v != dedup.Fresh {
				r.w.rows.SetDuplicate(i)
				r.ans.Duplicates++
			}
		}
	}
	rows := &r.w.rows
	r.ans.Accepted = rows.Len() - r.ans.Duplicates
	r.hours = r.hours[:0]
	if c.o.Hooks != nil { // read now: the rows go back to the pool at enqueue
		r.hours = rows.PastHours(now, r.hours)
	}

	var err error
	var p ingestor.Pending
	if rows.Len() > 0 {
		qctx, cancel := context.WithTimeout(context.Background(), c.o.QueueTimeout)
		p, err = c.add.Enqueue(qctx, rows)
		cancel()
		c.putWork(r) // the rows are copied (or refused): only the answer waits
		if err == nil {
			err = p.Wait()
		}
	}
	var uncertain *ingestor.UncertainError
	sharedOK := true
	switch {
	case claim != nil && err != nil && (p.Partial() || errors.As(err, &uncertain)):
		// Some rows may be in ClickHouse (a shard that committed, a block
		// whose answer was lost): each id stays held until its own outcome
		// is known, so that the sender's resend counts once either way.
		c.settling.Go(func() {
			c.o.Dedup.SettleEach(claim, p.Landed)
			c.settleShared(shared, p.Landed)
		})
	case claim != nil:
		committed := err == nil
		// Not waited for: until it lands, a resend to another instance
		// waits on this one's hold, and learns the same outcome.
		if shared != nil {
			c.settling.Go(func() { c.settleShared(shared, func(uint64) bool { return committed }) })
		}
		// Ids another instance holds were stored here as duplicates: this
		// request's own waiters learn their outcome too, so it is settled
		// as failed if one of them did not commit there.
		if committed && shared != nil {
			wctx, cancel := context.WithTimeout(context.Background(), c.o.QueueTimeout)
			var werr error
			if sharedOK, werr = shared.Wait(wctx); werr != nil {
				c.o.Logger.Warn("event ids held by another instance: outcome unknown, the sender resends", "err", werr)
			}
			cancel()
		}
		c.o.Dedup.Settle(claim, committed && sharedOK)
	}
	// Dead letters only once the rows are in: a request answered 503 is
	// resent whole, and its refused events must not be stored twice.
	if err == nil {
		err = c.storeDead(&r.dead)
	}
	if err != nil {
		return err
	}
	if claim != nil && (!claim.Wait() || !sharedOK) {
		return errResend
	}
	if c.o.Hooks != nil && len(r.hours) > 0 {
		c.o.Hooks.OnPastCommitted(r.hours)
	}
	return nil
}

// storeDead writes dead letters, bounded by the queue timeout.
func (c *Collector) storeDead(d *ingestor.DeadLetters) error {
	if c.o.DeadLetters == nil || d.Len() == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.o.QueueTimeout+5*time.Second)
	defer cancel()
	return ingestor.InsertDeadLetters(ctx, c.o.DeadLetters, c.o.DeadLettersTable, d)
}

func fieldIndex(field string) int {
	for i, f := range Fields {
		if f == field {
			return i
		}
	}
	return 0 // "" is invalid JSON
}

// readBody reads the request body into r.w.raw under held. A body whose
// length is known is refused before any byte is read when it is over
// MaxBodyBytes or finds no room in the budget; a chunked one is taken in
// steps as it arrives.
func (c *Collector) readBody(ctx *fiber.Ctx, r *request, held *meter) ([]byte, int, error) {
	tooLarge := func() ([]byte, int, error) {
		return nil, fiber.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes", c.o.MaxBodyBytes)
	}
	req := ctx.Request()
	if !req.IsBodyStream() { // a server without streaming read it already
		raw := req.Body()
		if len(raw) > c.o.MaxBodyBytes {
			return tooLarge()
		}
		if !held.grow(int64(len(raw))) {
			return nil, 0, errOverloaded
		}
		return raw, 0, nil
	}
	n := req.Header.ContentLength()
	if n > c.o.MaxBodyBytes {
		return tooLarge()
	}
	r.w.raw.Reset()
	if err := c.readMetered(&r.w.raw, ctx.Context().RequestBodyStream(), n, c.o.MaxBodyBytes, held); err != nil {
		if errors.Is(err, errTooLarge) {
			return tooLarge()
		}
		if errors.Is(err, errOverloaded) {
			return nil, 0, err
		}
		return nil, fiber.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	return r.w.raw.Bytes(), 0, nil
}

// discardBody reads what is left of a refused body, up to twice
// MaxBodyBytes, so that the client reads the answer instead of a connection reset and may
// retry on the same connection. Past that (or on a read error) the
// connection is closed after the answer.
func (c *Collector) discardBody(ctx *fiber.Ctx) {
	req := ctx.Request()
	if !req.IsBodyStream() {
		return
	}
	// Up to twice the limit, so a body just over it is answered cleanly too.
	most := 2 * int64(c.o.MaxBodyBytes)
	if n := req.Header.ContentLength(); int64(n) > most {
		ctx.Context().SetConnectionClose()
		return
	}
	// io.Discard reads through its own small pooled buffer.
	n, err := io.Copy(io.Discard, io.LimitReader(ctx.Context().RequestBodyStream(), most+1))
	if err != nil || n > most {
		ctx.Context().SetConnectionClose()
	}
}

// readStep is how much of a body of unknown size is taken from the budget
// at a time.
const readStep = 256 << 10

var errTooLarge = errors.New("over the limit")

// readMetered appends src to dst, at most limit bytes (errTooLarge past
// it), growing held before each read. size is the length when known, -1
// otherwise.
func (c *Collector) readMetered(dst *bytes.Buffer, src io.Reader, size, limit int, held *meter) error {
	if size >= 0 {
		if !held.grow(held.n + int64(max(size, 1))) {
			return errOverloaded
		}
		dst.Grow(size)
		_, err := io.CopyN(dst, src, int64(size))
		return err
	}
	base := held.n
	for {
		// Up to limit+1 bytes, so that a lone request always finds room to
		// meet its limit.
		step := min(readStep, limit+1-dst.Len())
		if !held.grow(base + int64(dst.Len()+step)) {
			return errOverloaded
		}
		dst.Grow(step)
		n, err := dst.ReadFrom(io.LimitReader(src, int64(step)))
		switch {
		case err != nil:
			return err
		case n < int64(step):
			return nil
		case dst.Len() > limit:
			return errTooLarge
		}
	}
}

// gunzip inflates raw into r.w.body under held, refusing bodies that inflate
// past the limit (a small gzip bomb must not take the memory of the process).
func (c *Collector) gunzip(r *request, raw []byte, held *meter) ([]byte, int, error) {
	var err error
	w := r.w
	if w.gz == nil {
		w.gz, err = gzip.NewReader(bytes.NewReader(raw))
	} else {
		err = w.gz.Reset(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, fiber.StatusBadRequest, fmt.Errorf("invalid gzip body: %v", err)
	}
	w.body.Reset()
	switch err := c.readMetered(&w.body, w.gz, -1, c.o.MaxDecodedBytes, held); {
	case errors.Is(err, errTooLarge):
		return nil, fiber.StatusRequestEntityTooLarge, fmt.Errorf("body inflates past %d bytes", c.o.MaxDecodedBytes)
	case errors.Is(err, errOverloaded):
		return nil, 0, err
	case err != nil:
		return nil, fiber.StatusBadRequest, fmt.Errorf("invalid gzip body: %v", err)
	}
	return w.body.Bytes(), 0, nil
}

// meter is a request's share of MaxInflightBytes, taken as it grows.
type meter struct {
	sem *semaphore.Weighted
	n   int64
}

// grow raises the share to n bytes, or reports false at once when the
// budget has no room.
func (m *meter) grow(n int64) bool {
	if n <= m.n {
		return true
	}
	if !m.sem.TryAcquire(n - m.n) {
		return false
	}
	m.n = n
	return true
}

func (m *meter) release() {
	m.sem.Release(m.n)
	m.n = 0
}

// pooledBufferCap is the largest body buffer kept for reuse: bigger ones
// go to the garbage collector. A 5000-event batch is about 1.3 MB.
const pooledBufferCap = 4 << 20

// get takes a request, with its work, from the pools.
func (c *Collector) get() *request {
	r := c.state.Get().(*request)
	r.w = c.works.Get().(*work)
	return r
}

// putWork hands r's work back to its pool, without its large buffers; once
// only.
func (c *Collector) putWork(r *request) {
	w := r.w
	if w == nil {
		return
	}
	r.w = nil
	if w.raw.Cap() > pooledBufferCap {
		w.raw = bytes.Buffer{}
	}
	if w.body.Cap() > pooledBufferCap {
		w.body = bytes.Buffer{}
	}
	c.works.Put(w)
}

// put returns r to the pool.
func (c *Collector) put(r *request) {
	c.putWork(r)
	c.state.Put(r)
}

// BodyRefused counts a body the HTTP server refused before Handle saw it
// (over the server's own limit); pass it to queryapi.Options.BodyRefused.
func (c *Collector) BodyRefused() { c.badBodies.Add(1) }

func (c *Collector) badBody(ctx *fiber.Ctx, status int, msg string) error {
	c.badBodies.Add(1)
	return ctx.Status(status).JSON(ErrorBody{Error: msg, Field: "body"})
}

// addFailed answers a request whose rows were not committed: 503 when a
// retry may succeed (buffer full, ClickHouse unreachable or overloaded),
// 500 otherwise. Either way nothing of the request is acknowledged. The
// answer names the kind of failure in our words; the cause goes to the
// API's error log with the request id, never to the client.
func (c *Collector) addFailed(ctx *fiber.Ctx, err error) error {
	if msg, ok := retryLater(err); ok {
		c.shed.Add(1)
		ctx.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(max(c.o.RetryAfter.Round(time.Second)/time.Second, 1))))
		return &clickagg.ServiceError{Status: fiber.StatusServiceUnavailable, Message: "events not committed, retry later: " + msg, Err: err}
	}
	c.failed.Add(1)
	return &clickagg.ServiceError{Status: fiber.StatusInternalServerError, Message: "events not committed: internal error", Err: err}
}

// retryLater says why a resend may succeed, or false when it will not.
func retryLater(err error) (string, bool) {
	switch {
	case errors.Is(err, ingestor.ErrBufferFull):
		return "ingest buffer full", true
	case errors.Is(err, errOverloaded):
		return "too many request bodies in flight", true
	case errors.Is(err, errResend):
		return "a concurrent request holding some of these event ids failed", true
	case errors.Is(err, errShared):
		return "event ids cannot be checked across instances (Redis unavailable)", true
	case ingestor.Temporary(err):
		return "ClickHouse unavailable or overloaded", true
	}
	return "", false
}

// Stats returns running totals.
func (c *Collector) Stats() Stats {
	s := Stats{
		Requests: c.requests.Load(), Accepted: c.accepted.Load(), Rejected: c.rejected.Load(),
		BadBodies: c.badBodies.Load(), Shed: c.shed.Load(), Failed: c.failed.Load(), DeadLost: c.deadLost.Load(),
		Duplicates: c.duplicates.Load(),
		ByField:    make(map[string]int64, len(Fields)),
		ByReason:   make(map[string]int64),
	}
	for i, f := range Fields {
		s.ByField[f] = c.byField[i].Load()
	}
	for i, name := range clickagg.RejectReasons() {
		s.ByReason[name] = c.byReason[i+1].Load()
	}
	return s
}
