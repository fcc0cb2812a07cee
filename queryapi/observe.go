package queryapi

import (
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"
)

// RequestObserver observes every answered request, e.g. for latency
// histograms; calls are synchronous and must be quick. route is the matched
// route pattern (bounded cardinality), "unmatched" for a 404 without one.
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
			} else if fe := (*fiber.Error)(nil); errors.As(err, &fe) {
				status = fe.Code
			}
		}
		route := c.Route().Path
		if status == fiber.StatusNotFound && (route == "/" || route == "") {
			route = "unmatched"
		}
		o.OnRequest(route, c.Method(), status, time.Since(start))
		return err
	}
}
