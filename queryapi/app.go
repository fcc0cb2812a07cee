// Package queryapi is clickagg's HTTP API on Fiber: the collector's ingest
// route, health and readiness, and the metrics queries.
package queryapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/requestid"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/console"
)

// Check is one dependency probed by /readyz. A failing Critical check makes
// the process unready (503); any other failure only marks it degraded.
type Check struct {
	Name     string
	Critical bool
	Probe    func(ctx context.Context) error
}

// Options configures the API. The zero value serves health routes only.
type Options struct {
	Ingest fiber.Handler // POST /v1/events; nil disables ingest
	// IngestStatus is served as JSON at GET /v1/ingest/status: counters of
	// accepted and rejected events, buffered and committed rows.
	IngestStatus func() any
	Checks       []Check
	BodyLimit    int // largest request body read at all; default 32 MiB (the collector applies its own, smaller limit with a JSON answer)
	// BodyRefused is called for each request refused with 413 before any
	// handler ran because its body is over BodyLimit, so that the refusal
	// is counted with the collector's own.
	BodyRefused func()

	// Metrics answers the metrics routes (normally the cache in front of
	// Direct); nil disables them. Direct is the uncached store, used by the
	// benchmark route to compare.
	Metrics, Direct clickagg.MetricsService
	CacheStats      func() any    // GET /v1/cache/stats; nil disables it
	ReconcileStatus func() any    // GET /v1/reconcile/status; nil disables it
	MaxRange        time.Duration // longest from/to span; default 31 days
	MaxTopN         int           // largest n of top and benchmark; default 1000
	Now             func() time.Time

	// Auth guards every route but health, readiness and docs: bearer
	// tokens, the ingest rate per token, requests handled at once.
	Auth AuthOptions

	// Observer sees every request's route, status and latency; optional.
	Observer RequestObserver
	// Prometheus serves GET /metrics (the query side's auth applies);
	// nil disables the route.
	Prometheus http.Handler

	// Logger gets the detail of every 5xx answer (the client sees a
	// generic message and the request id); default: discard.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultBodyLimit = 32 << 20
	DefaultMaxRange  = 31 * 24 * time.Hour
	DefaultMaxTopN   = 1000
)

// api holds what the handlers need.
type api struct {
	o      Options
	errLog *errorLog
}

// New builds the Fiber app.
func New(o Options) *fiber.App {
	if o.BodyLimit == 0 {
		o.BodyLimit = DefaultBodyLimit
	}
	if o.MaxRange == 0 {
		o.MaxRange = DefaultMaxRange
	}
	if o.MaxTopN == 0 {
		o.MaxTopN = DefaultMaxTopN
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{o: o, errLog: newErrorLog(o.Logger)}
	app := fiber.New(fiber.Config{
		AppName:               "clickagg",
		BodyLimit:             o.BodyLimit,
		DisableStartupMessage: true,
		ErrorHandler:          a.errorHandler,
		ReadTimeout:           30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		// The collector reads bodies itself, after taking room for them from
		// its in-flight budget; fasthttp would otherwise buffer every
		// connection's whole body before any handler could refuse it.
		StreamRequestBody: o.Ingest != nil,
	})
	// First, so that every answer, refusals included, carries its id
	// (the client's own X-Request-ID when it sent one).
	app.Use(requestid.New())
	if o.Observer != nil {
		app.Use(observe(o.Observer))
	}
	if o.Ingest != nil {
		// Other routes leave a streamed body unread: the connection cannot
		// carry another request after it.
		// A body announced over BodyLimit is refused here as fasthttp refuses
		// one when it does not stream.
		app.Use(func(c *fiber.Ctx) error {
			n := c.Request().Header.ContentLength()
			if n > 0 || n == -1 {
				if c.Path() != "/v1/events" || n > o.BodyLimit {
					c.Context().SetConnectionClose()
				}
				if n > o.BodyLimit {
					return fiber.ErrRequestEntityTooLarge
				}
			}
			return c.Next()
		})
	}
	// Before every route, so that routes added later are guarded too.
	if g := newGuard(o.Auth, o.BodyLimit, o.Now); g != nil {
		app.Use(g.handle)
	}
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	app.Get("/readyz", a.readyz)
	if o.Prometheus != nil {
		app.Get("/metrics", adaptor.HTTPHandler(o.Prometheus))
	}
	if o.Ingest != nil {
		app.Post("/v1/events", o.Ingest)
	}
	if o.IngestStatus != nil {
		app.Get("/v1/ingest/status", func(c *fiber.Ctx) error { return c.JSON(o.IngestStatus()) })
	}
	if o.Metrics != nil {
		app.Get("/v1/metrics/:country/:ad_format", a.metricsOne)
		app.Get("/v1/metrics", a.metricsGrouped)
		app.Get("/v1/ads/top", a.top)
		app.Get("/v1/ads/:ad_id/series", a.series)
		if o.Direct != nil {
			app.Get("/v1/benchmark/:country/:ad_format", a.benchmark)
		}
	}
	if o.CacheStats != nil {
		app.Get("/v1/cache/stats", func(c *fiber.Ctx) error { return c.JSON(o.CacheStats()) })
	}
	if o.ReconcileStatus != nil {
		app.Get("/v1/reconcile/status", func(c *fiber.Ctx) error { return c.JSON(o.ReconcileStatus()) })
	}
	registerDocs(app)
	console.Register(app)
	return app
}

// errorHandler answers every error as JSON, including the ones fasthttp
// raises before a handler runs (413 over BodyLimit, 404, 405). A 5xx
// answer says what kind of failure it is in our words and gives the
// request id; the cause (ClickHouse's text, addresses) is logged with that
// id, never sent.
func (a *api) errorHandler(c *fiber.Ctx, err error) error {
	code, body := errorStatus(err)
	switch code {
	case 0:
		code, body = fiber.StatusInternalServerError, fiber.Map{"error": "internal error"}
	case fiber.StatusBadRequest:
		refused(a.o.Auth.Hooks, routeClass(c.Path()), ReasonBadParam)
	case fiber.StatusRequestEntityTooLarge:
		body["field"] = "body"
		if a.o.BodyRefused != nil {
			a.o.BodyRefused()
		}
	}
	if code >= fiber.StatusInternalServerError {
		id := c.GetRespHeader(fiber.HeaderXRequestID)
		body["request_id"] = id
		a.errLog.answered(c, code, id, err)
	}
	return c.Status(code).JSON(body)
}

func (a *api) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	status, code := "ready", fiber.StatusOK
	deps := fiber.Map{}
	for _, ch := range a.o.Checks {
		if err := ch.Probe(ctx); err != nil {
			// The cause names addresses: the log has it, the open route not.
			deps[ch.Name] = "unreachable"
			a.errLog.probe(ch.Name, err)
			if ch.Critical {
				status, code = "unready", fiber.StatusServiceUnavailable
			} else if status == "ready" {
				status = "degraded"
			}
			continue
		}
		deps[ch.Name] = "ok"
	}
	body := fiber.Map{"status": status, "checks": deps}
	if code != fiber.StatusOK {
		body["request_id"] = c.GetRespHeader(fiber.HeaderXRequestID)
	}
	return c.Status(code).JSON(body)
}
