package generator

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	realcollector "github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/ingestor"
)

// nopAdder commits every row at once: the collector's validation is under
// test, not ClickHouse.
type nopAdder struct{}

func (nopAdder) Enqueue(context.Context, *ingestor.Rows) (ingestor.Pending, error) {
	return ingestor.Pending{}, nil
}

// kindOf says, from the line alone, which malformed kind it is, or "" for a
// good event: the test's own reading, not the generator's.
func kindOf(t *testing.T, line []byte, now time.Time) string {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	ts, isText := e["ts"].(string)
	parsed, err := time.Parse(time.RFC3339Nano, ts)
	switch {
	case e["ad_id"] == nil:
		return "ad_id missing"
	case !slices.Contains(clickagg.EventTypes(), e["type"].(string)):
		return "type"
	case !slices.Contains(clickagg.AdFormats(), e["ad_format"].(string)):
		return "ad_format"
	case !isText || err != nil:
		return "ts"
	case parsed.Before(now.Add(-realcollector.DefaultAllowedLateness)):
		return "too late"
	}
	return ""
}

// TestBadEventsRefused runs 100k lines of the default share through the
// collector's own validation (Messages, the Kafka path, which takes each
// event as Handle does): every malformed line is refused with the field and
// reason of its kind, every other line is accepted, and the share is about
// right.
func TestBadEventsRefused(t *testing.T) {
	const n, chunk = 100_000, 5000
	now := testStart
	lines := generate(Options{Seed: 5, Now: func() time.Time { return now }}, n)
	col := realcollector.New(nopAdder{}, realcollector.Options{Now: func() time.Time { return now }, MaxErrors: chunk})
	kinds := map[string]int{}
	tsForms := map[string]int{}
	refusedAs := map[int]realcollector.EventError{}
	accepted, rejected := 0, 0
	for from := 0; from < n; from += chunk {
		ans, err := col.Messages(t.Context(), clickagg.SourceKafka, lines[from:from+chunk])
		if err != nil {
			t.Fatal(err)
		}
		accepted += ans.Accepted
		rejected += ans.Rejected
		for _, e := range ans.Errors {
			refusedAs[from+e.Index] = e
		}
	}
	idForm := regexp.MustCompile(`^[0-9a-f]{16}-r[0-9a-f]+$`)
	bad := 0
	for i, line := range lines {
		kind := kindOf(t, line, now)
		e, refused := refusedAs[i]
		var id struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(line, &id)
		if kind == "" {
			if refused || idForm.MatchString(id.EventID) {
				t.Fatalf("line %d refused (%+v) or with a malformed line's id: %s", i, e, line)
			}
			continue
		}
		bad++
		kinds[kind]++
		if !idForm.MatchString(id.EventID) {
			t.Errorf("line %d is %s but its id %q is an original's", i, kind, id.EventID)
		}
		want, msg := kind, ""
		switch kind {
		case "ad_id missing":
			want, msg = "ad_id", "required"
		case "too late":
			want, msg = "ts", "allowed lateness"
		case "ts":
			tsForms[tsForm(line)]++
		}
		if !refused || e.Field != want || !strings.Contains(e.Message, msg) {
			t.Fatalf("line %d (%s) answered %+v, want refused on %s (%q): %s", i, kind, e, want, msg, line)
		}
	}
	if accepted+rejected != n || rejected != bad {
		t.Errorf("%d accepted + %d rejected of %d lines, %d malformed", accepted, rejected, n, bad)
	}
	within(t, "malformed lines", bad, DefaultBadShare*n, 0.15)
	for _, k := range []string{"type", "ad_format", "ad_id missing", "ts", "too late"} {
		if kinds[k] < bad/16 {
			t.Errorf("%d lines of kind %s among %d malformed: %v", kinds[k], k, bad, kinds)
		}
	}
	if len(tsForms) != 3 {
		t.Errorf("bad ts forms %v, want 3", tsForms)
	}
	st := col.Stats()
	if st.ByReason["too_late"] != int64(kinds["too late"]) || st.ByReason["invalid_field"] != int64(bad-kinds["too late"]) {
		t.Errorf("collector's rejections by reason %v, want %v", st.ByReason, kinds)
	}
	if st.ByField["ad_id"] != int64(kinds["ad_id missing"]) || st.ByField["ts"] != int64(kinds["ts"]+kinds["too late"]) {
		t.Errorf("collector's rejections by field %v, want %v", st.ByField, kinds)
	}
	t.Logf("%d malformed of %d: %v; bad ts %v", bad, n, kinds, tsForms)
}

// tsForm names the form of a bad ts.
func tsForm(line []byte) string {
	from, to := valueAt(line, `"ts":`)
	v := string(line[from:to])
	switch {
	case !strings.HasPrefix(v, `"`):
		return "number"
	case strings.Contains(v, " "):
		return "sql"
	}
	return "no zone"
}

// TestBadLinesLeaveGoodStream: the lines other than the malformed ones are
// byte for byte the stream without them, on the deterministic clock.
func TestBadLinesLeaveGoodStream(t *testing.T) {
	const n = 50_000
	o := Options{Seed: 23, Start: testStart, BadShare: 0.05}
	mixed := generate(o, n)
	o.BadShare = -1
	clean := generate(o, n)
	j := 0
	for _, line := range mixed {
		if kindOf(t, line, testStart.Add(time.Hour)) != "" {
			continue
		}
		if !bytes.Equal(line, clean[j]) {
			t.Fatalf("good line %d differs from the stream without bad lines:\n%s\n%s", j, line, clean[j])
		}
		j++
	}
	within(t, "malformed lines", n-j, 0.05*n, 0.1)
}

func TestBadShareOptions(t *testing.T) {
	if o := (Options{}).WithDefaults(); o.BadShare != DefaultBadShare || o.Validate() != nil {
		t.Errorf("defaults %+v", o)
	}
	for share, ok := range map[float64]bool{-1: true, 0.5: true, 1: true, 1.5: false} {
		o := Options{BadShare: share}.WithDefaults()
		if err := o.Validate(); (err == nil) != ok {
			t.Errorf("BadShare %v: %v", share, err)
		}
	}
	for _, line := range generate(Options{Seed: 5, Start: testStart, BadShare: -1, LateShare: -1}, 20_000) {
		if k := kindOf(t, line, testStart); k != "" {
			t.Fatalf("%s with BadShare < 0: %s", k, line)
		}
	}
}

func TestAppendBadAllocs(t *testing.T) {
	s := New(Options{Start: testStart, BadShare: 1})
	buf := s.AppendNext(make([]byte, 0, 1024)) // the one good line
	if a := testing.AllocsPerRun(10_000, func() { buf = s.AppendNext(buf[:0]) }); a != 0 {
		t.Errorf("a malformed line allocates %.2f times", a)
	}
}
