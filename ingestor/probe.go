package ingestor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ClickHouse/ch-go/proto"
)

// Prober is a Transport that can tell whether a block whose INSERT failed
// ambiguously (the answer was lost: timeout, reset) landed after all, so
// the ingestor does not insert it twice.
type Prober interface {
	Landed(ctx context.Context, table string, rows []ProbeRow) (bool, error)
}

// ProbeRow identifies one row by the events sort key plus its receive
// time, which no other copy of the event shares unless resent within the
// same second (and such a resend is a duplicate, which the probe skips).
type ProbeRow struct {
	AdID, EventID string
	TS, Received  proto.DateTime
}

// probeRows are the first and last non-duplicate rows of r: a block lands
// whole, so two rows tell.
func (r *Rows) probeRows() []ProbeRow {
	var out []ProbeRow
	add := func(i int) {
		out = append(out, ProbeRow{AdID: r.adID.Row(i), EventID: r.eventID.Row(i), TS: r.ts.Data[i], Received: r.received.Data[i]})
	}
	first, last := -1, -1
	for i := range r.duplicate {
		if r.duplicate[i] == 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first >= 0 {
		add(first)
	}
	if last > first {
		add(last)
	}
	return out
}

// Landed implements Prober with a primary-key lookup over HTTP.
func (h *HTTP) Landed(ctx context.Context, table string, rows []ProbeRow) (bool, error) {
	if len(rows) == 0 {
		return false, nil
	}
	var b strings.Builder
	b.WriteString("SELECT count() FROM " + table + " WHERE duplicate = 0 AND (ad_id, toUInt32(ts), event_id, toUInt32(received_at)) IN (")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %d, %s, %d)", quote(r.AdID), uint32(r.TS), quote(r.EventID), uint32(r.Received))
	}
	b.WriteString(")")
	out, err := h.Query(ctx, b.String())
	if err != nil {
		return false, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return false, fmt.Errorf("probe answer %q: %w", out, err)
	}
	return n >= len(rows), nil
}

// quote writes s as a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Query runs one read-only statement and returns its text answer.
func (h *HTTP) Query(ctx context.Context, sql string) (string, error) {
	u, _ := url.Parse(h.endpoint)
	q := u.Query()
	q.Del("decompress")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(sql))
	if err != nil {
		return "", fmt.Errorf("probe request: %w", err)
	}
	if h.o.User != "" {
		req.SetBasicAuth(h.o.User, h.o.Password)
	}
	resp, err := h.o.Client.Do(req)
	if err != nil {
		return "", &NetError{Err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", newServerError(resp, body)
	}
	return string(bytes.TrimSpace(body)), nil
}
