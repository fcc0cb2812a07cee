package queryapi

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg"
)

// maxWindow is the longest `window`; longer spans go through from/to.
const maxWindow = 7 * 24 * time.Hour

// maxValues bounds the values of one repeatable filter.
const maxValues = 100

func paramErr(param, format string, args ...any) *clickagg.ParamError {
	return &clickagg.ParamError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// params reads a request's query string, refusing unknown parameters so a
// typo (contry=US) cannot silently widen the answer.
type params struct {
	c       *fiber.Ctx
	allowed []string
}

func newParams(c *fiber.Ctx, allowed ...string) (*params, error) {
	p := &params{c: c, allowed: allowed}
	var bad string
	c.Context().QueryArgs().VisitAll(func(k, _ []byte) {
		if bad == "" && !slices.Contains(allowed, string(k)) {
			bad = string(k)
		}
	})
	if bad != "" {
		return nil, paramErr(bad, "unknown parameter (allowed: %s)", strings.Join(allowed, ", "))
	}
	return p, nil
}

func (p *params) all(name string) []string {
	var out []string
	for _, v := range p.c.Context().QueryArgs().PeekMulti(name) {
		out = append(out, string(v))
	}
	return out
}

// one returns the single value of name, or "" when absent.
func (p *params) one(name string) (string, error) {
	vs := p.all(name)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", paramErr(name, "given %d times, want once", len(vs))
}

var windowRE = regexp.MustCompile(`^([1-9][0-9]{0,5})([mhd])$`)

// timeRange reads window, or from and to. A window of N minutes ends with
// the current minute: [now-(N-1)m, now+1m) in whole minutes.
func (p *params) timeRange(now time.Time, maxRange time.Duration) (clickagg.Range, error) {
	window, err := p.one("window")
	if err != nil {
		return clickagg.Range{}, err
	}
	from, err := p.one("from")
	if err != nil {
		return clickagg.Range{}, err
	}
	to, err := p.one("to")
	if err != nil {
		return clickagg.Range{}, err
	}
	if window != "" && (from != "" || to != "") {
		return clickagg.Range{}, paramErr("window", "give either window or from and to")
	}
	if from == "" && to == "" {
		if window == "" {
			window = "1h"
		}
		m := windowRE.FindStringSubmatch(window)
		if m == nil {
			return clickagg.Range{}, paramErr("window", "want a number and a unit m, h or d, e.g. 5m, 1h, 24h, 7d")
		}
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
		d := time.Duration(n) * unit
		if n > int(maxWindow/unit) || d > maxWindow {
			return clickagg.Range{}, paramErr("window", "at most 7d; use from and to for longer spans")
		}
		end := now.UTC().Truncate(time.Minute).Add(time.Minute)
		return clickagg.Range{From: end.Add(-d), To: end}, nil
	}
	if from == "" {
		return clickagg.Range{}, paramErr("from", "required with to")
	}
	if to == "" {
		return clickagg.Range{}, paramErr("to", "required with from")
	}
	var r clickagg.Range
	for _, f := range []struct {
		name, val string
		dst       *time.Time
	}{{"from", from, &r.From}, {"to", to, &r.To}} {
		t, err := time.Parse(time.RFC3339, f.val)
		if err != nil {
			return clickagg.Range{}, paramErr(f.name, "want RFC 3339 time, e.g. 2026-11-22T10:00:00Z")
		}
		if !t.Truncate(time.Minute).Equal(t) {
			return clickagg.Range{}, paramErr(f.name, "must be on a whole minute")
		}
		*f.dst = t.UTC()
	}
	if !r.From.Before(r.To) {
		return clickagg.Range{}, paramErr("from", "must be before to")
	}
	if r.To.Sub(r.From) > maxRange {
		return clickagg.Range{}, paramErr("from", "range longer than %s", maxRange)
	}
	return r, nil
}

// filter reads the repeatable filters named in which.
func (p *params) filter(which ...string) (clickagg.Filter, error) {
	var f clickagg.Filter
	for _, name := range which {
		vals := p.all(name)
		if len(vals) > maxValues {
			return f, paramErr(name, "more than %d values", maxValues)
		}
		for _, v := range vals {
			if err := checkFilterValue(name, v); err != nil {
				return f, err
			}
		}
		switch name {
		case "country":
			f.Countries = vals
		case "ad_format":
			f.AdFormats = vals
		case "device":
			f.Devices = vals
		case "campaign_id":
			f.CampaignIDs = vals
		case "ad_id":
			f.AdIDs = vals
		}
	}
	return f.Normalized(), nil
}

// checkFilterValue validates one filter value. Enums also take "unknown",
// which selects events that did not say.
func checkFilterValue(name, v string) error {
	switch name {
	case "country":
		if !clickagg.ValidCountry(v) {
			return paramErr(name, "%q is not an upper-case ISO 3166-1 alpha-2 code", v)
		}
	case "ad_format":
		if _, ok := clickagg.ParseAdFormat(v); !ok && v != "unknown" {
			return paramErr(name, "%q is not one of %s", v, strings.Join(clickagg.AdFormats(), ", "))
		}
	case "device":
		if _, ok := clickagg.ParseDevice(v); !ok && v != "unknown" {
			return paramErr(name, "%q is not one of %s", v, strings.Join(clickagg.Devices(), ", "))
		}
	default:
		if v == "" || len(v) > clickagg.MaxIDLen || !utf8.ValidString(v) {
			return paramErr(name, "want 1 to %d bytes of UTF-8", clickagg.MaxIDLen)
		}
	}
	return nil
}

// intParam reads an integer in [min, max], def when absent.
func (p *params) intParam(name string, def, min, max int) (int, error) {
	s, err := p.one(name)
	if err != nil || s == "" {
		return def, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, paramErr(name, "want an integer from %d to %d", min, max)
	}
	return n, nil
}

// choice reads one of allowed, def when absent.
func (p *params) choice(name, def string, allowed ...string) (string, error) {
	s, err := p.one(name)
	if err != nil || s == "" {
		return def, err
	}
	if !slices.Contains(allowed, s) {
		return "", paramErr(name, "want one of %s", strings.Join(allowed, ", "))
	}
	return s, nil
}

// groupBy reads the comma-separated group_by list.
func (p *params) groupBy() ([]clickagg.Dimension, error) {
	s, err := p.one("group_by")
	if err != nil || s == "" {
		return nil, err
	}
	var dims []clickagg.Dimension
	for _, name := range strings.Split(s, ",") {
		d := clickagg.Dimension(strings.TrimSpace(name))
		if !slices.Contains(clickagg.Dimensions(), d) {
			return nil, paramErr("group_by", "%q is not one of country, ad_format, device, campaign_id, ad_id, minute, hour, day", string(d))
		}
		if slices.Contains(dims, d) {
			return nil, paramErr("group_by", "%q given twice", string(d))
		}
		dims = append(dims, d)
	}
	return dims, nil
}

// pathValue unescapes and checks a path parameter like its filter
// namesake. The result is a copy: Fiber's aliases the request buffer.
func pathValue(c *fiber.Ctx, name string) (string, error) {
	v, err := url.PathUnescape(c.Params(name))
	if err != nil {
		return "", paramErr(name, "invalid escape in path")
	}
	v = strings.Clone(v)
	if err := checkFilterValue(name, v); err != nil {
		return "", err
	}
	return v, nil
}
