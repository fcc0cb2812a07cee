package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

// event is the test's own model of one event; its JSON is written here,
// not by the code under test.
type event struct {
	id, typ, ad, country, format string
	ts                           time.Time
	price                        int64
	bad                          string // a broken field, if any
}

func (e event) json() []byte {
	country := e.country
	if e.bad == "country" {
		country = "usa"
	}
	s := fmt.Sprintf(`{"event_id":%q,"type":%q,"ts":%q,"ad_id":%q,"campaign_id":"c-%s","country":%q,"ad_format":%q,"device":"ios","price_micros":%d}`,
		e.id, e.typ, e.ts.UTC().Format(time.RFC3339Nano), e.ad, e.ad, country, e.format, e.price)
	return []byte(s)
}

var (
	types   = []string{"impression", "impression", "impression", "click", "conversion"}
	formats = []string{"banner", "video", "native"}
	nations = []string{"US", "KR", "JP"}
)

func randomEvent(r *rand.Rand, i int, base time.Time, span time.Duration) event {
	return event{
		id: fmt.Sprintf("e-%d-%d", i, r.Uint32()), typ: types[r.IntN(len(types))],
		ad: fmt.Sprintf("ad%02d", r.IntN(40)), country: nations[r.IntN(3)], format: formats[r.IntN(3)],
		ts: base.Add(-time.Duration(r.Int64N(int64(span)))).Truncate(time.Millisecond), price: r.Int64N(5000),
	}
}

type counts struct{ imp, clk, conv, spend int64 }

// model sums events by a key, the brute-force answer.
func model(events []event, key func(event) string) map[string]counts {
	m := map[string]counts{}
	for _, e := range events {
		c := m[key(e)]
		switch e.typ {
		case "impression":
			c.imp++
		case "click":
			c.clk++
		case "conversion":
			c.conv++
		}
		c.spend += e.price
		m[key(e)] = c
	}
	return m
}

// grouped asks the API for the range grouped by dims and renders the rows
// keyed like the model.
func (s *stack) grouped(from, to time.Time, dims string, key func(map[string]any) string) map[string]counts {
	var ans struct {
		Rows []map[string]any
	}
	s.get("/v1/metrics?group_by="+dims+"&from="+url.QueryEscape(from.Format(time.RFC3339))+"&to="+url.QueryEscape(to.Format(time.RFC3339)), &ans)
	m := map[string]counts{}
	for _, r := range ans.Rows {
		n := func(k string) int64 { return int64(r[k].(float64)) }
		m[key(r)] = counts{n("impressions"), n("clicks"), n("conversions"), n("spend_micros")}
	}
	return m
}

func byMinuteAd(e event) string {
	return e.ts.UTC().Truncate(time.Minute).Format(time.RFC3339) + " " + e.ad
}
func rowMinuteAd(r map[string]any) string {
	return fmt.Sprint(r["minute"]) + " " + fmt.Sprint(r["ad_id"])
}
func byCountryFormat(e event) string { return e.country + " " + e.format }
func rowCountryFormat(r map[string]any) string {
	return fmt.Sprint(r["country"]) + " " + fmt.Sprint(r["ad_format"])
}

func same(t *testing.T, what string, got, want map[string]counts) {
	t.Helper()
	var bad []string
	for k, w := range want {
		if got[k] != w {
			bad = append(bad, fmt.Sprintf("%s: got %v want %v", k, got[k], w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s: unexpected %v", k, g))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%s: %d cells differ, e.g. %v", what, len(bad), bad[:min(4, len(bad))])
	}
}

// send posts the lines in batches of size, with workers in parallel, and
// adds up the answers.
func (s *stack) send(lines [][]byte, size, workers int) answer {
	var (
		mu  sync.Mutex
		sum answer
		wg  sync.WaitGroup
	)
	work := make(chan [][]byte)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				a := s.post(b)
				mu.Lock()
				sum.Accepted += a.Accepted
				sum.Duplicates += a.Duplicates
				sum.Rejected += a.Rejected
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < len(lines); i += size {
		work <- lines[i:min(i+size, len(lines))]
	}
	close(work)
	wg.Wait()
	return sum
}

// TestSentThreeTimes: the same 10k events sent three times, in different
// batch splits, the last two sends concurrently, with a restart before
// them: every event counts once everywhere.
func TestSentThreeTimes(t *testing.T) {
	s := newStack(t, 0)
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now().UTC()
	events := make([]event, 10000)
	lines := make([][]byte, len(events))
	for i := range events {
		events[i] = randomEvent(r, i, now, 90*time.Minute)
		lines[i] = events[i].json()
	}
	first := s.send(lines, 1000, 4)
	s.restart()
	reversed := make([][]byte, len(lines))
	for i := range lines {
		reversed[i] = lines[len(lines)-1-i]
	}
	var second, third answer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); second = s.send(lines, 700, 2) }()
	go func() { defer wg.Done(); third = s.send(reversed, 1300, 2) }()
	wg.Wait()
	if first.Accepted != 10000 || first.Duplicates != 0 || second.Accepted+third.Accepted != 0 || second.Duplicates+third.Duplicates != 20000 {
		t.Fatalf("answers: first %+v second %+v third %+v", first, second, third)
	}
	if got := testenv.QueryString(t, s.db, "SELECT count(), countIf(duplicate = 0), uniqExact(event_id) FROM events"); got != "30000\t10000\t10000" {
		t.Errorf("events: %s", got)
	}
	from, to := now.Add(-91*time.Minute).Truncate(time.Minute), now.Truncate(time.Minute).Add(time.Minute)
	same(t, "minute x ad", s.grouped(from, to, "minute,ad_id", rowMinuteAd), model(events, byMinuteAd))
	same(t, "country x format", s.grouped(from, to, "country,ad_format", rowCountryFormat), model(events, byCountryFormat))
	want := model(events, func(event) string { return "all" })["all"]
	if got := testenv.QueryString(t, s.db, "SELECT sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_daily"); got != fmt.Sprintf("%d\t%d\t%d\t%d", want.imp, want.clk, want.conv, want.spend) {
		t.Errorf("ad_stats_daily: %s, want %+v", got, want)
	}
}

// TestLateEvents: events 1 minute, 1 hour and 3 days old land in their
// minutes and show through the API at once, though those ranges were
// cached; too old and future events go to dead_letters with their reason.
func TestLateEvents(t *testing.T) {
	s := newStack(t, 0)
	now := time.Now().UTC()
	r := rand.New(rand.NewPCG(3, 4))
	ask := func(at time.Time) (float64, bool) {
		var ans struct {
			Rows   []map[string]any
			Cached bool
		}
		m := at.Truncate(time.Minute)
		s.get("/v1/metrics?from="+url.QueryEscape(m.Format(time.RFC3339))+"&to="+url.QueryEscape(m.Add(time.Minute).Format(time.RFC3339)), &ans)
		return ans.Rows[0]["impressions"].(float64), ans.Cached
	}
	for i, age := range []time.Duration{time.Minute, time.Hour, 72 * time.Hour} {
		at := now.Add(-age)
		e := randomEvent(r, i, at, time.Millisecond)
		e.typ = "impression"
		s.post([][]byte{e.json()})
		if n, _ := ask(at); n != 1 {
			t.Fatalf("%v old: %v impressions", age, n)
		}
		if _, cached := ask(at); !cached {
			var stats map[string]any
			s.get("/v1/cache/stats", &stats)
			t.Fatalf("%v old: second ask not cached; cache %v", age, stats)
		}
		late := randomEvent(r, 100+i, at, time.Millisecond)
		late.typ = "impression"
		if a := s.post([][]byte{late.json()}); a.Accepted != 1 {
			t.Fatalf("late event: %+v", a)
		}
		if n, cached := ask(at); n != 2 || cached {
			t.Errorf("%v old: after a late event the API says %v impressions (cached %v), want 2 fresh", age, n, cached)
		}
	}
	tooOld := randomEvent(r, 200, now.Add(-8*24*time.Hour), time.Millisecond)
	future := randomEvent(r, 201, now.Add(10*time.Minute), time.Millisecond)
	a := s.post([][]byte{tooOld.json(), future.json()})
	if a.Rejected != 2 || a.Errors[0].Field != "ts" || a.Errors[1].Field != "ts" ||
		!strings.Contains(a.Errors[0].Message, "lateness") || !strings.Contains(a.Errors[1].Message, "ahead") {
		t.Fatalf("answer %+v", a)
	}
	got := testenv.QueryString(t, s.db, "SELECT reason, field, event_id, raw = "+sqlString(string(tooOld.json()))+" FROM dead_letters ORDER BY reason")
	if want := fmt.Sprintf("too_late\tts\t%s\t1\nfuture\tts\t%s\t0", tooOld.id, future.id); got != want {
		t.Errorf("dead_letters:\n%s\nwant\n%s", got, want)
	}
	if c := testenv.QueryString(t, s.db, "SELECT count() FROM events WHERE event_id IN ('"+tooOld.id+"', '"+future.id+"')"); c != "0" {
		t.Errorf("refused events stored: %s", c)
	}
	st := s.srv.IngestStatus().Collector
	if st.ByReason["too_late"] != 1 || st.ByReason["future"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func sqlString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// TestRandomStreams: random streams with resends (often concurrent with
// their originals), broken, too old and future events, sent in random
// batches by concurrent clients: the API equals a brute-force model.
func TestRandomStreams(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newStack(t, 0)
			r := rand.New(rand.NewPCG(seed, seed*7))
			now := time.Now().UTC()
			var valid []event
			var lines [][]byte
			resends, refused := 0, 0
			for i := range 1500 {
				e := randomEvent(r, i, now, 3*time.Hour)
				switch p := r.Float64(); {
				case p < 0.05:
					e.bad = "country"
					refused++
				case p < 0.07:
					e.ts = now.Add(-8 * 24 * time.Hour)
					refused++
				case p < 0.09:
					e.ts = now.Add(time.Hour)
					refused++
				default:
					valid = append(valid, e)
				}
				lines = append(lines, e.json())
				if e.bad == "" && r.Float64() < 0.25 && len(valid) > 0 {
					again := valid[r.IntN(len(valid))]
					// resend soon after, often in a concurrent batch
					lines = append(lines, again.json())
					resends++
				}
			}
			r.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
			sum := s.send(lines, 1+r.IntN(200), 3)
			if sum.Accepted != len(valid) || sum.Duplicates != resends || sum.Rejected != refused {
				t.Fatalf("answers %+v, want %d accepted, %d duplicates, %d rejected", sum, len(valid), resends, refused)
			}
			from, to := now.Add(-3*time.Hour-time.Minute).Truncate(time.Minute), now.Truncate(time.Minute).Add(time.Minute)
			same(t, "minute x ad", s.grouped(from, to, "minute,ad_id", rowMinuteAd), model(valid, byMinuteAd))
			same(t, "country x format", s.grouped(from, to, "country,ad_format", rowCountryFormat), model(valid, byCountryFormat))
			if dl := testenv.QueryString(t, s.db, "SELECT count() FROM dead_letters"); dl != fmt.Sprint(refused) {
				t.Errorf("dead letters %s, want %d", dl, refused)
			}
		})
	}
}

// TestClientRetryAfterTimeout: a client gives up waiting (its request is
// still being committed) and resends: the resend waits for the first copy
// and is answered as duplicates; every event counts once.
func TestClientRetryAfterTimeout(t *testing.T) {
	s := newStack(t, 700*time.Millisecond)
	r := rand.New(rand.NewPCG(5, 6))
	now := time.Now().UTC()
	var lines [][]byte
	for i := range 200 {
		lines = append(lines, randomEvent(r, i, now, 10*time.Minute).json())
	}
	body := bytes.Join(lines, []byte("\n"))
	impatient := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := impatient.Post(s.url+"/v1/events", "application/x-ndjson", bytes.NewReader(body)); err == nil {
		t.Fatal("the first send should time out on the client")
	}
	a := s.post(lines)
	if a.Accepted != 0 || a.Duplicates != 200 {
		t.Fatalf("resend after a client timeout: %+v", a)
	}
	if got := testenv.QueryString(t, s.db, "SELECT countIf(duplicate = 0), countIf(duplicate = 1) FROM events"); got != "200\t200" {
		t.Errorf("events: %s", got)
	}
	if got := testenv.QueryString(t, s.db, "SELECT sum(impressions + clicks + conversions) FROM ad_stats_minute"); got != "200" {
		t.Errorf("aggregate counts %s events", got)
	}
}
