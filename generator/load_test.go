package generator

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/eventjson"
)

// collector is a fake collector. It answers the first unavailable requests
// with 503, then 200 with counts, rejecting the events the real collector's
// decoder refuses or that are over 7 days old (its default lateness), and
// treating a repeated event_id as a duplicate; status, when set, is the
// answer to everything.
type collector struct {
	unavailable int
	retryAfter  string
	status      int
	hang        bool // hold every request until the client gives up

	mu       sync.Mutex
	requests int
	lines    int64 // in requests answered 200
	accepted int64
	dups     int64
	rejected int64
	refused  []string // event_ids of lines answered 503
	seen     map[string]bool
	problems []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.hang {
		// The server notices the client leaving only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	}
	ids, bad, err := readBatch(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	switch {
	case err != nil:
		c.problems = append(c.problems, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
	case c.status != 0:
		http.Error(w, "no", c.status)
	case c.requests <= c.unavailable:
		c.refused = append(c.refused, ids...)
		w.Header().Set("Retry-After", c.retryAfter)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	default:
		var accepted, dups, rejected int64
		for i, id := range ids {
			switch {
			case bad[i]:
				rejected++
			case c.seen[id]:
				dups++
			default:
				accepted++
			}
			c.seen[id] = true
		}
		c.lines += int64(len(ids))
		c.accepted += accepted
		c.dups += dups
		c.rejected += rejected
		fmt.Fprintf(w, `{"accepted":%d,"rejected":%d,"duplicates":%d,"errors":[]}`, accepted, rejected, dups)
	}
}

// checkRequests fails t if a request was malformed; c.mu must be held.
func (c *collector) checkRequests(t *testing.T) {
	t.Helper()
	if len(c.problems) > 0 {
		t.Fatalf("collector saw bad requests: %v", c.problems)
	}
}

// readBatch checks the request and returns the event_ids of its lines and
// which of them the collector would refuse.
func readBatch(r *http.Request) ([]string, []bool, error) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/events" || r.Header.Get("Content-Type") != "application/x-ndjson" {
		return nil, nil, fmt.Errorf("request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		body = zr
	}
	var ids []string
	var bad []bool
	var dec eventjson.Decoder
	oldest := time.Now().Add(-7 * 24 * time.Hour)
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		var e struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.EventID == "" {
			return nil, nil, fmt.Errorf("line %q: %v", sc.Text(), err)
		}
		var ev clickagg.Event
		err := dec.Decode(sc.Bytes(), &ev)
		ids, bad = append(ids, e.EventID), append(bad, err != nil || ev.Time.Before(oldest))
	}
	return ids, bad, sc.Err()
}

func serve(t *testing.T, c *collector) string {
	t.Helper()
	c.seen = map[string]bool{}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestLoadRetriesAndRate(t *testing.T) {
	c := &collector{unavailable: 2, retryAfter: "1"}
	var progress bytes.Buffer
	const rate, duration = 2000, 2 * time.Second
	rep, err := Load(t.Context(), New(Options{Seed: 1, DuplicateShare: 0.01}), LoadOptions{
		Target: serve(t, c), Rate: rate, Duration: duration, Batch: 100, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkRequests(t)
	if rep.Retries != 2 || rep.Failed != 0 {
		t.Errorf("%d retries and %d failed events, want 2 and 0", rep.Retries, rep.Failed)
	}
	if rep.Sent != c.lines || rep.Accepted != c.accepted || rep.Duplicates != c.dups || rep.Rejected != c.rejected {
		t.Errorf("report %+v, collector took %d lines: %d accepted, %d duplicates, %d rejected", rep, c.lines, c.accepted, c.dups, c.rejected)
	}
	// Rejected events are answered, not failed: their batch's other events
	// count once, as accepted or duplicates.
	if rep.Accepted+rep.Duplicates+rep.Rejected != rep.Sent || rep.Duplicates == 0 || rep.Rejected == 0 {
		t.Errorf("accepted %d + duplicates %d + rejected %d != sent %d", rep.Accepted, rep.Duplicates, rep.Rejected, rep.Sent)
	}
	if len(c.refused) != 200 {
		t.Errorf("%d lines answered 503, want 2 batches of 100", len(c.refused))
	}
	for _, id := range c.refused {
		if !c.seen[id] {
			t.Fatalf("event %s answered 503 was never resent", id)
		}
	}
	// Counts, not timing: the pacer lets at most rate × duration through.
	if limit := int64(rate * duration.Seconds()); rep.Sent > limit || rep.Sent < limit/2 {
		t.Errorf("sent %d events in %s at %d/s, want at most %d and not far below", rep.Sent, duration, rate, limit)
	}
	if rep.P50 <= 0 || rep.P99 < rep.P50 || rep.Max < rep.P99 {
		t.Errorf("latencies p50 %s p99 %s max %s", rep.P50, rep.P99, rep.Max)
	}
	if !strings.Contains(progress.String(), "ev/s sent") || !strings.Contains(progress.String(), "duplicates/s") || !strings.Contains(progress.String(), "rejected/s") {
		t.Errorf("progress %q", progress.String())
	}
}

func TestLoadGzipUnpaced(t *testing.T) {
	c := &collector{}
	rep, err := Load(t.Context(), New(Options{Seed: 2}), LoadOptions{
		Target: serve(t, c), Rate: -1, Duration: 300 * time.Millisecond, Batch: 200, Gzip: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkRequests(t)
	if rep.Sent == 0 || rep.Sent != c.lines || rep.Failed != 0 || rep.Sent%200 != 0 {
		t.Errorf("report %+v, collector took %d lines", rep, c.lines)
	}
}

func TestLoadFailures(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name      string
		c         *collector
		target    string
		wantError string
	}{
		{"bad request", &collector{status: http.StatusBadRequest}, "", "status 400"},
		// The last batch may be cut short by the end of the run, so its
		// error can be either.
		{"always busy", &collector{unavailable: 1 << 30, retryAfter: "0"}, "", ""},
		{"no server", nil, closed.URL, "post"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if tc.c != nil {
				target = serve(t, tc.c)
			}
			rep, err := Load(t.Context(), New(Options{}), LoadOptions{Target: target, Rate: 1000, Duration: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Sent == 0 || rep.Failed != rep.Sent || rep.Accepted != 0 || rep.LastError == "" || !strings.Contains(rep.LastError, tc.wantError) {
				t.Errorf("report %+v, want every event failed with %q", rep, tc.wantError)
			}
			if tc.c != nil && tc.c.unavailable > 0 && rep.Retries < maxRetries+1 {
				t.Errorf("%d retries, want a batch to have used up its %d", rep.Retries, maxRetries)
			}
		})
	}
}

func TestLoadStopsOnCancel(t *testing.T) {
	c := &collector{hang: true}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	rep, err := Load(ctx, New(Options{}), LoadOptions{Target: serve(t, c), Rate: 1000, StopGrace: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("Load took %s to stop", took)
	}
	if rep.Sent == 0 || rep.Failed != rep.Sent {
		t.Errorf("report %+v, want the requests in flight failed", rep)
	}
}

func TestLoadOptionsChecked(t *testing.T) {
	for _, target := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		if _, err := Load(t.Context(), New(Options{}), LoadOptions{Target: target}); err == nil {
			t.Errorf("target %q accepted", target)
		}
	}
	if _, err := Load(t.Context(), nil, LoadOptions{Target: "http://127.0.0.1:1"}); err == nil {
		t.Error("nil source accepted")
	}
}

func TestRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":      defaultRetryAfter,
		"2":     2 * time.Second,
		"0":     0,
		"-3":    0,
		"99999": maxRetryAfter,
		"soon":  defaultRetryAfter,
		time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat): 0,
	} {
		if got := retryAfter(in); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}
