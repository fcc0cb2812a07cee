package queryapi

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"
)

// errorLog writes the causes of 5xx answers and failed readiness probes:
// every one while they are rare, then at most errorLogRate a second with
// the number left out, so that an outage answered thousands of times a
// second does not flood the log with the same cause.
type errorLog struct {
	log     *slog.Logger
	limit   *rate.Limiter
	skipped atomic.Int64
}

const (
	errorLogRate  = 10
	errorLogBurst = 20
)

func newErrorLog(l *slog.Logger) *errorLog {
	return &errorLog{log: l, limit: rate.NewLimiter(errorLogRate, errorLogBurst)}
}

// answered logs the cause of a 5xx answer with its request id, method and
// route pattern.
func (e *errorLog) answered(c *fiber.Ctx, status int, id string, err error) {
	if !e.limit.Allow() {
		e.skipped.Add(1)
		return
	}
	e.log.LogAttrs(c.UserContext(), slog.LevelError, "request failed",
		slog.String("request_id", id), slog.String("method", c.Method()), slog.String("route", c.Route().Path),
		slog.Int("status", status), slog.String("err", err.Error()), slog.Int64("not_logged_before", e.skipped.Swap(0)))
}

// probe logs a failed readiness check.
func (e *errorLog) probe(name string, err error) {
	if !e.limit.Allow() {
		e.skipped.Add(1)
		return
	}
	e.log.LogAttrs(context.Background(), slog.LevelWarn, "readiness check failed",
		slog.String("check", name), slog.String("err", err.Error()), slog.Int64("not_logged_before", e.skipped.Swap(0)))
}
