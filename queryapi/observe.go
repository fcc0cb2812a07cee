package queryapi

import (
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// RequestObserver observes every answered request, e.g. for latency
// histograms; calls are synchronous and must be quick. route is the matched
// route pattern (bounded cardinality), "unmatched" for a 404 without one,
// "middleware" for a request answered before routing (401, 429, 413, 503);
// both strings may be kept.
type RequestObserver interface {
	OnRequest(route, method string, status int, d time.Duration)
}

// observe times each request from the first middleware on, so refusals by
// later middleware (body limit, auth, rate limit) are observed too.
func observe(o RequestObserver) fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		err := c.Next()
		status := c.Response().StatusCode()
		if err != nil {
			// The error handler has not written the answer yet.
			status = fiber.StatusInternalServerError
			if code, _ := errorStatus(err); code != 0 {
				status = code
			}
		}
		// Only registered patterns become labels: a request answered by
		// middleware (refusals) or by no route at all would otherwise bring
		// its raw path, unbounded and pointing into a reused buffer.
		r := c.Route()
		route := r.Path
		switch {
		case len(r.Handlers) == 0 || status == fiber.StatusNotFound && route == "/":
			route = "unmatched"
		case route == "/":
			route = "middleware"
		}
		o.OnRequest(route, stableMethod(c.Method()), status, time.Since(start))
		return err
	}
}

// stableMethod returns m as a string that outlives the request: Fiber's
// Method points into fasthttp's reused buffer, and an observer that keeps
// it (as a Prometheus label) would see it change.
func stableMethod(m string) string {
	for _, known := range []string{fiber.MethodGet, fiber.MethodPost, fiber.MethodHead, fiber.MethodPut,
		fiber.MethodDelete, fiber.MethodPatch, fiber.MethodOptions} {
		if m == known {
			return known
		}
	}
	return strings.Clone(m)
}
