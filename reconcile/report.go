package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/clickagg/clickagg"
)

// Report is the result of one Run or Replay. It is JSON-friendly: the API
// serves the scheduler's last one.
type Report struct {
	Range      clickagg.Range `json:"range"`
	StartedAt  time.Time      `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at"`
	// Fixed says corrections were written for every differing row found.
	Fixed   bool          `json:"fixed"`
	Tables  []TableReport `json:"tables"`
	Rebuilt []string      `json:"rebuilt,omitempty"` // Replay: the days (YYYY-MM-DD) whose top_ads_minute was rebuilt
	// NoSketches: Replay found no top_ads_minute_mv (servers before 19
	// keep no sketches), so it rebuilt none.
	NoSketches bool   `json:"no_sketches,omitempty"`
	Err        string `json:"err,omitempty"`
}

// rangeJSON is a range as the API writes ranges.
type rangeJSON struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// reportJSON is Report with its range in snake case (clickagg.Range has no
// JSON tags).
type reportJSON struct {
	Range rangeJSON `json:"range"` // shadows plainReport.Range
	plainReport
}

type plainReport Report

// MarshalJSON writes the range as {"from", "to"}, like the API.
func (r Report) MarshalJSON() ([]byte, error) {
	return json.Marshal(reportJSON{rangeJSON(r.Range), plainReport(r)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Report) UnmarshalJSON(b []byte) error {
	var j reportJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Report(j.plainReport)
	r.Range = clickagg.Range(j.Range)
	return nil
}

// TableReport is the comparison of one aggregate table with the truth.
type TableReport struct {
	Table string    `json:"table"`
	From  time.Time `json:"from"` // the span compared: the run's range, or its whole hours or days for the tables keyed by them
	To    time.Time `json:"to"`
	Keys  []string  `json:"keys"`  // the key columns, in the order of the table's rows
	Rows  int64     `json:"rows"`  // keys whose counts differ (per shard on a cluster)
	Diffs []Diff    `json:"diffs"` // the first MaxRows of them, in shard and key order
	Note  string    `json:"note,omitempty"`
}

// Diff is one key whose counts differ between the aggregate table and the
// recomputation from deduplicated events.
type Diff struct {
	Table     string            `json:"table"`
	Shard     int               `json:"shard,omitempty"` // on a cluster, the shard (from 1) whose events and aggregates differ
	Key       map[string]string `json:"key"`             // column → value; times in RFC 3339, days as YYYY-MM-DD
	Aggregate clickagg.Counts   `json:"aggregate"`
	Truth     clickagg.Counts   `json:"truth"`
}

// Correction is what a fix adds to the key: truth − aggregate.
func (d Diff) Correction() clickagg.Counts {
	return clickagg.Counts{
		Impressions: d.Truth.Impressions - d.Aggregate.Impressions,
		Clicks:      d.Truth.Clicks - d.Aggregate.Clicks,
		Conversions: d.Truth.Conversions - d.Aggregate.Conversions,
		SpendMicros: d.Truth.SpendMicros - d.Aggregate.SpendMicros,
	}
}

// Differences is the number of differing rows over all tables.
func (r *Report) Differences() int64 {
	var n int64
	for _, t := range r.Tables {
		n += t.Rows
	}
	return n
}

// Table returns the report of the named table, or nil.
func (r *Report) Table(name string) *TableReport {
	for i := range r.Tables {
		if r.Tables[i].Table == name {
			return &r.Tables[i]
		}
	}
	return nil
}

// Unfixed says differences were found and left in place.
func (r *Report) Unfixed() bool { return r.Differences() > 0 && !r.Fixed }

// ParseRange reads a range of whole minutes from RFC 3339 texts, from
// inclusive and to exclusive.
func ParseRange(from, to string) (clickagg.Range, error) {
	var rng clickagg.Range
	for _, p := range []struct {
		name, s string
		t       *time.Time
	}{{"from", from, &rng.From}, {"to", to, &rng.To}} {
		t, err := time.Parse(time.RFC3339, p.s)
		if err != nil {
			return rng, fmt.Errorf("%s %q: want RFC 3339, e.g. 2026-11-22T10:00:00Z", p.name, p.s)
		}
		if !t.Equal(t.Truncate(time.Minute)) {
			return rng, fmt.Errorf("%s %q: not a whole minute", p.name, p.s)
		}
		*p.t = t.UTC()
	}
	return rng, checkRange(rng)
}

// checkRange accepts non-empty ranges of whole minutes.
func checkRange(rng clickagg.Range) error {
	if !rng.From.Equal(rng.From.Truncate(time.Minute)) || !rng.To.Equal(rng.To.Truncate(time.Minute)) {
		return fmt.Errorf("range %s to %s: not whole minutes", rng.From.Format(time.RFC3339Nano), rng.To.Format(time.RFC3339Nano))
	}
	if !rng.From.Before(rng.To) {
		return errors.New("range: from must be before to")
	}
	return nil
}

// day is the UTC midnight at or before t.
func day(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// whole is the part of rng made of whole UTC grains (hours or days); ok is
// false when it holds none.
func whole(rng clickagg.Range, grain time.Duration) (from, to time.Time, ok bool) {
	from, to = rng.From.UTC().Truncate(grain), rng.To.UTC().Truncate(grain)
	if from.Before(rng.From) {
		from = from.Add(grain)
	}
	return from, to, from.Before(to)
}

func grainName(grain time.Duration) string {
	if grain == time.Hour {
		return "hour"
	}
	return "day"
}

// touchedDays are the UTC days rng overlaps.
func touchedDays(rng clickagg.Range) []time.Time {
	var days []time.Time
	for d := day(rng.From); d.Before(rng.To); d = d.AddDate(0, 0, 1) {
		days = append(days, d)
	}
	return days
}
