// Package collector is the HTTP ingest endpoint: it decodes a request's
// events, rejects bad ones with per-field errors, and answers only after the
// accepted ones are committed to ClickHouse by the ingestor.
package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/klauspost/compress/gzip"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/eventjson"
	"github.com/clickagg/clickagg/ingestor"
)

// Adder commits rows; *ingestor.Ingestor implements it.
type Adder interface {
	Add(ctx context.Context, r *ingestor.Rows) error
}

// Options configures a Collector. The zero value works.
type Options struct {
	MaxBodyBytes    int           // request body as sent; default 16 MiB
	MaxDecodedBytes int           // body after gzip; default 64 MiB
	MaxEvents       int           // events per request; default 100000
	QueueTimeout    time.Duration // wait for ingest buffer room before 503; default 2 s
	RetryAfter      time.Duration // advertised on 503; default 1 s
	MaxErrors       int           // per-event errors in an answer; default 100
	Now             func() time.Time
}

func (o *Options) setDefaults() {
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 16 << 20
	}
	if o.MaxDecodedBytes == 0 {
		o.MaxDecodedBytes = 64 << 20
	}
	if o.MaxEvents == 0 {
		o.MaxEvents = 100000
	}
	if o.QueueTimeout == 0 {
		o.QueueTimeout = 2 * time.Second
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = time.Second
	}
	if o.MaxErrors == 0 {
		o.MaxErrors = 100
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// EventError is one rejected event of a request.
type EventError struct {
	Index   int    `json:"index"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Answer is the body of a 200 answer.
type Answer struct {
	Accepted int          `json:"accepted"`
	Rejected int          `json:"rejected"`
	Errors   []EventError `json:"errors"`
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
	Requests  int64            `json:"requests"`
	Accepted  int64            `json:"accepted"`
	Rejected  int64            `json:"rejected"`
	ByField   map[string]int64 `json:"rejected_by_field"`
	BadBodies int64            `json:"bad_bodies"` // 400, 413
	Shed      int64            `json:"shed"`       // 503
	Failed    int64            `json:"failed"`     // 500
}

// Collector handles POST /v1/events.
type Collector struct {
	o     Options
	add   Adder
	state sync.Pool // *request

	requests, accepted, rejected, badBodies, shed, failed atomic.Int64
	byField                                               []atomic.Int64 // indexed like Fields
}

// request is the reusable per-request state.
type request struct {
	dec  eventjson.Decoder
	rows ingestor.Rows
	body bytes.Buffer
	gz   *gzip.Reader
	ans  Answer
}

// New returns a Collector committing through add.
func New(add Adder, o Options) *Collector {
	o.setDefaults()
	c := &Collector{o: o, add: add, byField: make([]atomic.Int64, len(Fields))}
	c.state.New = func() any { return new(request) }
	return c
}

// Handle is the Fiber handler of POST /v1/events.
func (c *Collector) Handle(ctx *fiber.Ctx) error {
	c.requests.Add(1)
	raw := ctx.Request().Body()
	if len(raw) > c.o.MaxBodyBytes {
		return c.badBody(ctx, fiber.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", c.o.MaxBodyBytes))
	}
	r := c.state.Get().(*request)
	defer c.state.Put(r)

	body := raw
	switch enc := string(ctx.Request().Header.Peek(fiber.HeaderContentEncoding)); enc {
	case "", "identity":
	case "gzip":
		var status int
		var err error
		if body, status, err = c.gunzip(r, raw); err != nil {
			return c.badBody(ctx, status, err.Error())
		}
	default:
		return c.badBody(ctx, fiber.StatusUnsupportedMediaType, "unsupported Content-Encoding "+strconv.Quote(enc)+" (use gzip or none)")
	}

	r.rows.Reset()
	r.rows.SetReceived(c.o.Now())
	r.ans = Answer{Errors: r.ans.Errors[:0]}
	var rejected [16]int64 // by field, added to the totals only when the request is answered
	tooMany := errors.New("too many events")
	err := r.dec.Each(body, func(i int, _ []byte, ev *clickagg.Event, err error) error {
		if i >= c.o.MaxEvents {
			return tooMany
		}
		if err == nil {
			r.rows.Append(ev, false)
			return nil
		}
		var fe *clickagg.FieldError
		if !errors.As(err, &fe) {
			return err
		}
		r.ans.Rejected++
		rejected[fieldIndex(fe.Field)]++
		if len(r.ans.Errors) < c.o.MaxErrors {
			field := fe.Field
			if field == "" {
				field = "json"
			}
			r.ans.Errors = append(r.ans.Errors, EventError{Index: i, Field: field, Message: fe.Message})
		}
		return nil
	})
	switch {
	case errors.Is(err, tooMany):
		return c.badBody(ctx, fiber.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d events in one request", c.o.MaxEvents))
	case errors.Is(err, eventjson.ErrBody):
		return c.badBody(ctx, fiber.StatusBadRequest, err.Error())
	case err != nil:
		return c.badBody(ctx, fiber.StatusBadRequest, err.Error())
	}

	if n := r.rows.Len(); n > 0 {
		qctx, cancel := context.WithTimeout(context.Background(), c.o.QueueTimeout)
		err := c.add.Add(qctx, &r.rows)
		cancel()
		if err != nil {
			return c.addFailed(ctx, err)
		}
		r.ans.Accepted = n
	}
	c.accepted.Add(int64(r.ans.Accepted))
	c.rejected.Add(int64(r.ans.Rejected))
	for i, n := range rejected[:len(Fields)] {
		if n > 0 {
			c.byField[i].Add(n)
		}
	}
	return ctx.JSON(&r.ans)
}

func fieldIndex(field string) int {
	for i, f := range Fields {
		if f == field {
			return i
		}
	}
	return 0 // "" is invalid JSON
}

// gunzip inflates raw into r.body, refusing bodies that inflate past the
// limit (a small gzip bomb must not take the memory of the process).
func (c *Collector) gunzip(r *request, raw []byte) ([]byte, int, error) {
	var err error
	if r.gz == nil {
		r.gz, err = gzip.NewReader(bytes.NewReader(raw))
	} else {
		err = r.gz.Reset(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, fiber.StatusBadRequest, fmt.Errorf("invalid gzip body: %v", err)
	}
	r.body.Reset()
	n, err := r.body.ReadFrom(io.LimitReader(r.gz, int64(c.o.MaxDecodedBytes)+1))
	if err != nil {
		return nil, fiber.StatusBadRequest, fmt.Errorf("invalid gzip body: %v", err)
	}
	if n > int64(c.o.MaxDecodedBytes) {
		return nil, fiber.StatusRequestEntityTooLarge, fmt.Errorf("body inflates past %d bytes", c.o.MaxDecodedBytes)
	}
	return r.body.Bytes(), 0, nil
}

func (c *Collector) badBody(ctx *fiber.Ctx, status int, msg string) error {
	c.badBodies.Add(1)
	return ctx.Status(status).JSON(ErrorBody{Error: msg, Field: "body"})
}

// addFailed answers a request whose rows were not committed: 503 when a
// retry may succeed (buffer full, ClickHouse unreachable or overloaded),
// 500 otherwise. Either way nothing of the request is acknowledged.
func (c *Collector) addFailed(ctx *fiber.Ctx, err error) error {
	if ingestor.Temporary(err) {
		c.shed.Add(1)
		ctx.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(max(c.o.RetryAfter.Round(time.Second)/time.Second, 1))))
		return ctx.Status(fiber.StatusServiceUnavailable).JSON(ErrorBody{Error: "events not committed, retry later: " + err.Error()})
	}
	c.failed.Add(1)
	return ctx.Status(fiber.StatusInternalServerError).JSON(ErrorBody{Error: "events not committed: " + err.Error()})
}

// Stats returns running totals.
func (c *Collector) Stats() Stats {
	s := Stats{
		Requests: c.requests.Load(), Accepted: c.accepted.Load(), Rejected: c.rejected.Load(),
		BadBodies: c.badBodies.Load(), Shed: c.shed.Load(), Failed: c.failed.Load(),
		ByField: make(map[string]int64, len(Fields)),
	}
	for i, f := range Fields {
		s.ByField[f] = c.byField[i].Load()
	}
	return s
}
