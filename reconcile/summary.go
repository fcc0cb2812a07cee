package reconcile

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clickagg/clickagg"
)

// WriteSummary writes r for people: one line for the run, one per table,
// and up to maxRows differing rows of each table with the aggregate's and
// the truth's value of every measure that differs.
func (r *Report) WriteSummary(w io.Writer, maxRows int) error {
	var b strings.Builder
	state := "no differences"
	switch n := r.Differences(); {
	case r.Err != "":
		state = "failed: " + r.Err
	case n > 0 && r.Fixed:
		state = plural(n, "differing row") + ", fixed"
	case n > 0:
		state = plural(n, "differing row") + ", not fixed"
	}
	fmt.Fprintf(&b, "%s to %s: %s (%s)\n", r.Range.From.UTC().Format(time.RFC3339), r.Range.To.UTC().Format(time.RFC3339),
		state, r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond))
	for _, t := range r.Tables {
		if t.Note != "" {
			fmt.Fprintf(&b, "%s: %s\n", t.Table, t.Note)
			continue
		}
		legend := ""
		if t.Rows > 0 && maxRows > 0 {
			legend = " (counts: aggregate → truth where they differ)"
		}
		fmt.Fprintf(&b, "%s: %s%s\n", t.Table, plural(t.Rows, "differing row"), legend)
		writeDiffs(&b, t, maxRows)
	}
	if len(r.Rebuilt) > 0 {
		fmt.Fprintf(&b, "top_ads_minute: rebuilt %s\n", strings.Join(r.Rebuilt, ", "))
	}
	if r.NoSketches {
		b.WriteString("top_ads_minute: not rebuilt, not kept on this server (no top_ads_minute_mv)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeDiffs writes a table of t's first maxRows diffs. A measure cell is
// "aggregate → truth" where they differ, else the common value.
func writeDiffs(b *strings.Builder, t TableReport, maxRows int) {
	n := min(maxRows, len(t.Diffs))
	if n <= 0 {
		return
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	measures := []string{"impressions", "clicks", "conversions", "spend_micros"}
	var head []string
	sharded := t.Diffs[0].Shard > 0 // on a cluster
	if sharded {
		head = append(head, "shard")
	}
	fmt.Fprintln(tw, "  "+strings.Join(append(append(head, t.Keys...), measures...), "\t"))
	for _, d := range t.Diffs[:n] {
		cells := make([]string, 0, len(t.Keys)+len(measures)+1)
		if sharded {
			cells = append(cells, strconv.Itoa(d.Shard))
		}
		for _, k := range t.Keys {
			cells = append(cells, d.Key[k])
		}
		for _, m := range measures {
			cells = append(cells, cell(d.Aggregate.Get(clickagg.Metric(m)), d.Truth.Get(clickagg.Metric(m))))
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
	}
	tw.Flush()
	if more := t.Rows - int64(n); more > 0 {
		fmt.Fprintf(b, "  ... and %d more\n", more)
	}
}

func cell(agg, truth int64) string {
	if agg == truth {
		return strconv.FormatInt(agg, 10)
	}
	return strconv.FormatInt(agg, 10) + " → " + strconv.FormatInt(truth, 10)
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.FormatInt(n, 10) + " " + what + "s"
}
