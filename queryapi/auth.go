package queryapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/clickagg/clickagg"
)

// AuthOptions guards the API: bearer tokens per side, the ingest rate per
// token and the requests handled at once. The zero value guards nothing.
type AuthOptions struct {
	// IngestTokens are accepted on POST /v1/events, QueryTokens on every
	// other route but the open ones (health, readiness, docs). An empty
	// list leaves that side open.
	IngestTokens, QueryTokens []string
	// IngestRate is the ingest requests per second allowed per token (per
	// client IP while ingest is open); 0 is no limit. IngestBurst is how
	// many may come at once; default max(1, IngestRate).
	IngestRate  float64
	IngestBurst int
	// MaxConcurrent bounds the requests being handled at once, the open
	// routes excepted; past it the answer is 503. 0 is no limit.
	MaxConcurrent int
	// Hooks sees every refusal; may be nil.
	Hooks Hooks
}

// DefaultMaxConcurrent is serve's bound on requests handled at once: high
// enough never to refuse a healthy load, low enough to bound goroutines and
// memory when clients pile up.
const DefaultMaxConcurrent = 4096

// Validate checks the limits; tokens are checked where they are read.
func (o AuthOptions) Validate() error {
	rateErr := clickagg.NonNegative("IngestRate", o.IngestRate)
	if math.IsNaN(o.IngestRate) || math.IsInf(o.IngestRate, 0) {
		rateErr = &clickagg.ConfigError{Field: "IngestRate", Value: o.IngestRate, Want: "a number of requests per second, 0 for no limit"}
	}
	return clickagg.FirstError(
		rateErr,
		clickagg.NonNegative("IngestBurst", o.IngestBurst),
		clickagg.NonNegative("MaxConcurrent", o.MaxConcurrent),
	)
}

// Hooks observes refused requests, e.g. to count them for Prometheus.
type Hooks interface {
	// OnRefused is called once per refused request. route is "ingest" or
	// "query" (a class, not the path, so that labels stay few); reason is
	// "unauthorized", "rate_limited", "busy" or "bad_param".
	OnRefused(route, reason string)
}

// Refusal reasons given to Hooks.
const (
	ReasonUnauthorized = "unauthorized"
	ReasonRateLimited  = "rate_limited"
	ReasonBusy         = "busy"
	ReasonBadParam     = "bad_param"
)

// Refusals is a Hooks that counts refusals by reason.
type Refusals struct {
	unauthorized, rateLimited, busy, badParam atomic.Uint64
}

// RefusalStats are the totals of a Refusals.
type RefusalStats struct {
	Unauthorized uint64 `json:"unauthorized"`
	RateLimited  uint64 `json:"rate_limited"`
	Busy         uint64 `json:"busy"`
	BadParam     uint64 `json:"bad_param"`
}

// OnRefused implements Hooks.
func (r *Refusals) OnRefused(_, reason string) {
	switch reason {
	case ReasonUnauthorized:
		r.unauthorized.Add(1)
	case ReasonRateLimited:
		r.rateLimited.Add(1)
	case ReasonBusy:
		r.busy.Add(1)
	case ReasonBadParam:
		r.badParam.Add(1)
	}
}

// Stats returns the running totals.
func (r *Refusals) Stats() RefusalStats {
	return RefusalStats{r.unauthorized.Load(), r.rateLimited.Load(), r.busy.Load(), r.badParam.Load()}
}

func refused(h Hooks, route routeKind, reason string) {
	if h != nil {
		h.OnRefused(route.String(), reason)
	}
}

type routeKind int

const (
	openRoute routeKind = iota
	ingestRoute
	queryRoute
)

func (k routeKind) String() string {
	switch k {
	case ingestRoute:
		return "ingest"
	case queryRoute:
		return "query"
	}
	return "open"
}

// routeClass says which tokens a path needs. It sees the path as Fiber's
// router does (case-insensitive, trailing slashes ignored) so that no
// spelling of the ingest route escapes its class, and anything unknown,
// including routes added later such as /metrics, is a query route.
// Everything under /docs/ and /dashboard/ is open: only the pages' own
// files live there (the dashboard's data comes from the guarded routes).
func routeClass(path string) routeKind {
	p := strings.ToLower(strings.TrimRight(path, "/"))
	switch {
	case p == "/healthz", p == "/readyz", p == "/docs", p == "/openapi.json", strings.HasPrefix(p, "/docs/"),
		p == "", p == "/dashboard", strings.HasPrefix(p, "/dashboard/"):
		return openRoute
	case p == "/v1/events":
		return ingestRoute
	}
	return queryRoute
}

type digest = [sha256.Size]byte

// guard is the middleware that applies AuthOptions.
type guard struct {
	ingest, query []digest
	limits        *keyedLimiter // nil: no ingest rate limit
	maxConcurrent int64
	inflight      atomic.Int64
	hooks         Hooks
	bodyLimit     int64 // most of a refused body read away
}

// newGuard returns nil when o guards nothing.
func newGuard(o AuthOptions, bodyLimit int, now func() time.Time) *guard {
	if len(o.IngestTokens) == 0 && len(o.QueryTokens) == 0 && o.IngestRate <= 0 && o.MaxConcurrent <= 0 {
		return nil
	}
	g := &guard{ingest: digests(o.IngestTokens), query: digests(o.QueryTokens), maxConcurrent: int64(max(o.MaxConcurrent, 0)), hooks: o.Hooks, bodyLimit: int64(bodyLimit)}
	if o.IngestRate > 0 {
		burst := o.IngestBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(o.IngestRate)))
		}
		g.limits = newKeyedLimiter(rate.Limit(o.IngestRate), burst, now)
	}
	return g
}

// digests hashes the tokens so that comparing them takes the same time
// whatever their lengths.
func digests(tokens []string) []digest {
	var out []digest
	for _, t := range tokens {
		out = append(out, sha256.Sum256([]byte(t)))
	}
	return out
}

func (g *guard) handle(c *fiber.Ctx) error {
	kind := routeClass(c.Path())
	if kind == openRoute {
		return c.Next()
	}
	tokens := g.query
	if kind == ingestRoute {
		tokens = g.ingest
	}
	var key string
	if len(tokens) > 0 {
		d, ok := bearer(c.Get(fiber.HeaderAuthorization))
		// One answer for every failure: a caller learns nothing about
		// which part was wrong or what the other side accepts.
		if !ok || !matchAny(d, tokens) {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="clickagg"`)
			return g.refuse(c, kind, ReasonUnauthorized, fiber.StatusUnauthorized, fiber.Map{"error": "unauthorized"})
		}
		key = string(d[:])
	}
	if kind == ingestRoute && g.limits != nil {
		body := fiber.Map{"error": "rate limit exceeded", "field": "authorization"}
		if key == "" {
			key = c.IP()
			body = fiber.Map{"error": "rate limit exceeded"}
		}
		if wait := g.limits.reserve(key); wait > 0 {
			c.Set(fiber.HeaderRetryAfter, retryAfter(wait))
			return g.refuse(c, kind, ReasonRateLimited, fiber.StatusTooManyRequests, body)
		}
	}
	if g.maxConcurrent > 0 {
		if g.inflight.Add(1) > g.maxConcurrent {
			g.inflight.Add(-1)
			c.Set(fiber.HeaderRetryAfter, "1")
			return g.refuse(c, kind, ReasonBusy, fiber.StatusServiceUnavailable, fiber.Map{"error": "too many requests in progress, retry later"})
		}
		defer g.inflight.Add(-1)
	}
	return c.Next()
}

func (g *guard) refuse(c *fiber.Ctx, kind routeKind, reason string, status int, body fiber.Map) error {
	refused(g.hooks, kind, reason)
	drainBody(c, g.bodyLimit)
	return c.Status(status).JSON(body)
}

// drainBody reads away what is left of a streamed body, up to most bytes,
// so that the client reads the answer instead of a connection reset and
// may go on using the connection. Past that it is closed after the answer.
func drainBody(c *fiber.Ctx, most int64) {
	req := c.Request()
	if !req.IsBodyStream() || c.Response().ConnectionClose() {
		return
	}
	if int64(req.Header.ContentLength()) > most {
		c.Context().SetConnectionClose()
		return
	}
	n, err := io.Copy(io.Discard, io.LimitReader(c.Context().RequestBodyStream(), most+1))
	if err != nil || n > most {
		c.Context().SetConnectionClose()
	}
}

// bearer returns the digest of the token of an "Authorization: Bearer
// <token>" header; the scheme is case-insensitive (RFC 7235).
func bearer(h string) (digest, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return digest{}, false
	}
	return sha256.Sum256([]byte(tok)), true
}

// matchAny compares d with every token, without stopping at a match, so
// that the time taken does not tell which one matched.
func matchAny(d digest, tokens []digest) bool {
	found := 0
	for i := range tokens {
		found |= subtle.ConstantTimeCompare(d[:], tokens[i][:])
	}
	return found == 1
}

// retryAfter is a Retry-After value: whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// keyedLimiter is one token bucket per key. The keys are bounded: a key
// whose bucket has filled up again is dropped (a new one would be the
// same), swept at most every sweepEvery; past maxKeys one is dropped at
// random.
type keyedLimiter struct {
	mu         sync.Mutex
	limit      rate.Limit
	burst      int
	keys       map[string]*rate.Limiter
	maxKeys    int
	sweepEvery time.Duration
	nextSweep  time.Time
	now        func() time.Time
}

func newKeyedLimiter(limit rate.Limit, burst int, now func() time.Time) *keyedLimiter {
	return &keyedLimiter{limit: limit, burst: burst, keys: map[string]*rate.Limiter{}, maxKeys: 10000, sweepEvery: time.Minute, now: now}
}

// reserve takes one request from key's bucket: 0 when allowed, else how
// long until it would be.
func (l *keyedLimiter) reserve(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !now.Before(l.nextSweep) {
		l.sweep(now)
	}
	lim, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= l.maxKeys {
			l.sweep(now)
		}
		for k := range l.keys {
			if len(l.keys) < l.maxKeys {
				break
			}
			delete(l.keys, k)
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.keys[strings.Clone(key)] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

func (l *keyedLimiter) sweep(now time.Time) {
	for k, lim := range l.keys {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.keys, k)
		}
	}
	l.nextSweep = now.Add(l.sweepEvery)
}
