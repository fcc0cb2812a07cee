package collector_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/queryapi"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type server struct {
	url string
	db  testenv.ClickHouseDB
	col *collector.Collector
	in  *ingestor.Ingestor
}

// start serves a collector on a free port over a freshly migrated database.
// clock is the collector's time in these tests: after every fixture event.
var clock = func() time.Time { return time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) }

func start(t *testing.T, o collector.Options) *server {
	t.Helper()
	if o.Now == nil {
		o.Now = clock
	}
	db := testenv.Migrated(t)
	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: db.HTTPURL, Database: db.Database})
	if err != nil {
		t.Fatal(err)
	}
	in := ingestor.New(tr, ingestor.Options{Linger: 20 * time.Millisecond})
	if o.DeadLetters == nil {
		o.DeadLetters = tr // refused events go to dead_letters, as serve's do
	}
	col := collector.New(in, o)
	app := queryapi.New(queryapi.Options{Ingest: col.Handle, BodyRefused: col.BodyRefused, BodyLimit: 2 << 20})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	t.Cleanup(func() {
		app.Shutdown()
		in.Close(context.Background())
	})
	return &server{url: "http://" + ln.Addr().String(), db: db, col: col, in: in}
}

type answer struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	Errors   []struct {
		Index   int    `json:"index"`
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
	Error string `json:"error"`
	Field string `json:"field"`
}

func (s *server) post(t *testing.T, body []byte, header ...string) (int, answer, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/events", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-ndjson")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("status %d, body %q is not JSON: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, a, resp.Header
}

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

const ok1 = `{"event_id":"ok-1","type":"click","ts":"2026-11-22T10:00:01Z","ad_id":"a1","country":"US","ad_format":"banner","device":"web","price_micros":5}`

func TestBadInput(t *testing.T) {
	s := start(t, collector.Options{MaxBodyBytes: 1 << 20, MaxEvents: 1000})
	ev := func(kv string) string {
		return `{"event_id":"x","type":"click","ts":1763805600000,"ad_id":"a",` + kv + `}`
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		header []string
		status int
		field  string // of the single error (200) or of the body error
	}{
		{"bad json", []byte(`{"event_id":`), nil, 400, "body"},
		{"not json at all", []byte("hello\nworld"), nil, 400, "body"},
		{"bad array", []byte(`[{"event_id":"a"},`), nil, 400, "body"},
		{"empty", nil, nil, 400, "body"},
		{"bad gzip", []byte("not gzip"), []string{"Content-Encoding", "gzip"}, 400, "body"},
		{"unknown encoding", []byte(ok1), []string{"Content-Encoding", "br"}, 415, "body"},
		{"oversized", bytes.Repeat([]byte(ok1+"\n"), 1<<20/len(ok1)+1), nil, 413, "body"},
		{"gzip bomb", gz(strings.Repeat(" ", 70<<20)), []string{"Content-Encoding", "gzip"}, 413, "body"},
		{"too many events", []byte(strings.Repeat(ok1+"\n", 1001)), nil, 413, "body"},
		{"wrong type", []byte(ev(`"price_micros":"5"`)), nil, 200, "price_micros"},
		{"unknown enum", []byte(ev(`"device":"toaster"`)), nil, 200, "device"},
		{"unknown type", []byte(`{"event_id":"x","type":"view","ts":1763805600000,"ad_id":"a"}`), nil, 200, "type"},
		{"missing required", []byte(`{"event_id":"x","type":"click","ad_id":"a"}`), nil, 200, "ts"},
		{"negative price", []byte(ev(`"price_micros":-5`)), nil, 200, "price_micros"},
		{"bad country", []byte(ev(`"country":"usa"`)), nil, 200, "country"},
		{"bad ip", []byte(ev(`"ip":"1.2.3"`)), nil, 200, "ip"},
		{"line not an object", []byte(ok1 + "\n[1,2]"), nil, 200, "json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, a, _ := s.post(t, tc.body, tc.header...)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%+v)", status, tc.status, a)
			}
			if status != 200 {
				if a.Field != tc.field || a.Error == "" {
					t.Errorf("error body %+v, want field %q", a, tc.field)
				}
				return
			}
			if a.Rejected != 1 || len(a.Errors) != 1 || a.Errors[0].Field != tc.field || a.Errors[0].Message == "" {
				t.Errorf("answer %+v, want one error on %q", a, tc.field)
			}
		})
	}
	t.Run("over the server limit", func(t *testing.T) {
		// The server answers 413 once it has the headers and the first 8 KiB
		// it prefetches, and closes the connection; a client still writing
		// the body may see that as a reset instead of the answer, so only
		// the headers and 64 KiB are sent.
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s", 3<<20, bytes.Repeat([]byte{' '}, 64<<10))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != 413 || a.Field != "body" || a.Error == "" {
			t.Errorf("status %d, body %+v (%v), want 413 naming the body", resp.StatusCode, a, err)
		}
	})
	// Only ok1 of "line not an object" was good; nothing else may have landed.
	if got := testenv.QueryString(t, s.db, "SELECT count(), groupArray(event_id) FROM events"); got != "1\t['ok-1']" {
		t.Errorf("events after bad input: %s", got)
	}
	st := s.col.Stats()
	if st.Accepted != 1 || st.Rejected != 8 || st.ByField["price_micros"] != 2 || st.ByField["json"] != 1 || st.BadBodies != 10 {
		t.Errorf("stats %+v", st)
	}
}

func TestMixedRequestAndForms(t *testing.T) {
	s := start(t, collector.Options{})
	body := `[` + ok1 + `,{"event_id":"ok-2","type":"impression","ts":1795341601000,"ad_id":7},{"event_id":"bad","type":"click","ts":"2026-11-22T10:00:01Z"}]`
	status, a, _ := s.post(t, gz(body), "Content-Encoding", "gzip", "Content-Type", "application/json")
	if status != 200 || a.Accepted != 2 || a.Rejected != 1 || a.Errors[0].Index != 2 || a.Errors[0].Field != "ad_id" {
		t.Fatalf("%d %+v", status, a)
	}
	if got := testenv.QueryString(t, s.db, "SELECT event_id, ad_id, country, toString(ts) FROM events ORDER BY event_id"); got != "ok-1\ta1\tUS\t2026-11-22 10:00:01\nok-2\t7\tZZ\t2026-11-22 10:00:01" {
		t.Errorf("events: %s", got)
	}
}

// ClickHouse unreachable: 503 with Retry-After, nothing acknowledged.
func TestUnavailable(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	tr, _ := ingestor.NewHTTP(ingestor.HTTPOptions{URL: dead})
	in := ingestor.New(tr, ingestor.Options{MaxRetries: 1, Backoff: time.Millisecond, Linger: time.Millisecond})
	defer in.Close(context.Background())
	col := collector.New(in, collector.Options{Now: clock})
	app := queryapi.New(queryapi.Options{Ingest: col.Handle})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go app.Listener(ln)
	defer app.Shutdown()
	s := &server{url: "http://" + ln.Addr().String()}
	status, a, h := s.post(t, []byte(ok1))
	if status != 503 || h.Get("Retry-After") == "" || a.Error == "" || strings.Contains(a.Error, "query=") {
		t.Fatalf("status %d retry-after %q body %+v", status, h.Get("Retry-After"), a)
	}
	if st := col.Stats(); st.Accepted != 0 || st.Shed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// key is one (ad, minute) cell of the expectation.
type key struct{ ad, minute string }
type sums struct{ imp, clk, conv, spend int64 }

// TestIngestGenerated sends 100k generated events through the HTTP collector
// and checks events and both aggregates against sums computed here from the
// sent JSON with encoding/json, not with the code under test.
func TestIngestGenerated(t *testing.T) {
	s := start(t, collector.Options{})
	src := generator.New(generator.Options{Seed: 7, Ads: 500, DuplicateShare: -1, LateShare: 0.02, BadShare: -1,
		Start: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC), Rate: 2000})
	const total, batch = 100000, 2000
	want := map[key]*sums{}
	daily := map[string]*sums{}
	var bodies [][]byte
	var line []byte
	var body []byte
	for i := range total {
		line = src.AppendNext(line[:0])
		var ev struct {
			Type  string    `json:"type"`
			TS    time.Time `json:"ts"`
			AdID  string    `json:"ad_id"`
			Price int64     `json:"price_micros"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("generated %s: %v", line, err)
		}
		k := key{ev.AdID, ev.TS.UTC().Truncate(time.Minute).Format("2006-01-02 15:04:05")}
		for _, m := range []*sums{cell(want, k), cell(daily, ev.AdID+" "+k.minute[:10])} {
			switch ev.Type {
			case "impression":
				m.imp++
			case "click":
				m.clk++
			case "conversion":
				m.conv++
			}
			m.spend += ev.Price
		}
		body = append(append(body, line...), '\n')
		if (i+1)%batch == 0 {
			bodies = append(bodies, body)
			body = nil
		}
	}
	var wg sync.WaitGroup
	work := make(chan []byte)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				status, a, _ := s.post(t, b)
				if status != 200 || a.Accepted != batch || a.Rejected != 0 {
					t.Errorf("status %d answer %+v", status, a)
				}
			}
		}()
	}
	for _, b := range bodies {
		work <- b
	}
	close(work)
	wg.Wait()

	if got := testenv.QueryString(t, s.db, "SELECT count(), uniqExact(event_id) FROM events"); got != fmt.Sprintf("%d\t%d", total, total) {
		t.Fatalf("events: %s", got)
	}
	compare(t, "ad_stats_minute", want, testenv.QueryString(t, s.db,
		"SELECT ad_id, toString(minute), sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_minute GROUP BY ad_id, minute"))
	compare(t, "ad_stats_daily", daily, testenv.QueryString(t, s.db,
		"SELECT concat(ad_id, ' ', toString(day)), '', sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_daily GROUP BY ad_id, day"))
}

// TestLoadBadEvents drives the collector with generator.Load and a share
// of malformed events: the generator's report is the collector's count
// (accepted and rejected, nothing failed), every accepted event is in
// events and no malformed one, every rejected one is a dead letter with the
// reason and field of its kind.
func TestLoadBadEvents(t *testing.T) {
	s := start(t, collector.Options{Now: time.Now})
	src := generator.New(generator.Options{Seed: 13, Ads: 300, BadShare: 0.02, Now: time.Now, IDPrefix: "lb-"})
	rep, err := generator.Load(t.Context(), src, generator.LoadOptions{Target: s.url, Rate: 10000, Duration: 2 * time.Second, Batch: 500})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	st := s.col.Stats()
	if rep.Failed != 0 || rep.Sent == 0 || rep.Accepted+rep.Duplicates+rep.Rejected != rep.Sent {
		t.Fatalf("report %+v: want every event answered, accepted or rejected", rep)
	}
	if st.Accepted != rep.Accepted || st.Rejected != rep.Rejected {
		t.Errorf("collector counted %d accepted, %d rejected; the report %d, %d", st.Accepted, st.Rejected, rep.Accepted, rep.Rejected)
	}
	if share := float64(rep.Rejected) / float64(rep.Sent); share < 0.014 || share > 0.026 {
		t.Errorf("%d of %d rejected (%.4f), want about 0.02", rep.Rejected, rep.Sent, share)
	}
	for _, f := range []string{"type", "ad_format", "ad_id", "ts"} {
		if st.ByField[f] == 0 {
			t.Errorf("no rejection on %s: %v", f, st.ByField)
		}
	}
	if st.ByReason["invalid_field"] == 0 || st.ByReason["too_late"] == 0 || st.ByReason["invalid_field"]+st.ByReason["too_late"] != rep.Rejected {
		t.Errorf("rejections by reason %v, want invalid_field and too_late making %d", st.ByReason, rep.Rejected)
	}
	// Malformed events have ids with "-r" (generator/bad.go); the others none.
	if got, want := testenv.QueryString(t, s.db, "SELECT count(), countIf(position(event_id, '-r') > 0) FROM events"), fmt.Sprintf("%d\t0", rep.Accepted+rep.Duplicates); got != want {
		t.Errorf("events (all, malformed): %s, want %s", got, want)
	}
	// A batch answered 503 stored none of its dead letters: its resend
	// stores them once.
	dead := testenv.QueryString(t, s.db, "SELECT countIf(reason = 'invalid_field'), countIf(reason = 'too_late' AND field = 'ts'), countIf(position(event_id, '-r') = 0) FROM dead_letters")
	if want := fmt.Sprintf("%d\t%d\t0", st.ByReason["invalid_field"], st.ByReason["too_late"]); dead != want {
		t.Errorf("dead letters (invalid_field, too_late, not malformed): %s, want %s", dead, want)
	}
}

func cell[K comparable](m map[K]*sums, k K) *sums {
	if m[k] == nil {
		m[k] = &sums{}
	}
	return m[k]
}

// compare checks TSV rows "a \t b \t imp \t clk \t conv \t spend" against want.
func compare[K comparable](t *testing.T, table string, want map[K]*sums, tsv string) {
	t.Helper()
	got := map[string]sums{}
	for _, row := range strings.Split(tsv, "\n") {
		var a, b string
		var s sums
		f := strings.Split(row, "\t")
		if len(f) != 6 {
			t.Fatalf("%s: row %q", table, row)
		}
		a, b = f[0], f[1]
		fmt.Sscan(f[2]+" "+f[3]+" "+f[4]+" "+f[5], &s.imp, &s.clk, &s.conv, &s.spend)
		got[strings.TrimSpace(a+" "+b)] = s
	}
	var bad []string
	for k, w := range want {
		name := strings.TrimSpace(fmt.Sprint(k))
		if kk, ok := any(k).(key); ok {
			name = kk.ad + " " + kk.minute
		}
		if got[name] != *w {
			bad = append(bad, fmt.Sprintf("%s: got %+v want %+v", name, got[name], *w))
		}
		delete(got, name)
	}
	for k, g := range got {
		bad = append(bad, fmt.Sprintf("%s: unexpected %+v", k, g))
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%s: %d cells differ, e.g. %v", table, len(bad), bad[:min(5, len(bad))])
	}
	if len(want) == 0 {
		t.Errorf("%s: nothing expected", table)
	}
}

// blockingAdder holds every Enqueue until released: requests stay in flight.
type blockingAdder struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAdder) Enqueue(ctx context.Context, _ *ingestor.Rows) (ingestor.Pending, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return ingestor.Pending{}, nil
	case <-ctx.Done():
		return ingestor.Pending{}, ctx.Err()
	}
}

// TestInflightBytesShed: with the byte budget held by one request, the next
// one is refused with 503 and Retry-After instead of waiting in memory.
// (The adder is a stand-in: the budget is pure logic before any commit.)
func TestInflightBytesShed(t *testing.T) {
	add := &blockingAdder{entered: make(chan struct{}, 1), release: make(chan struct{})}
	body := []byte(ok1)
	col := collector.New(add, collector.Options{Now: clock, MaxBodyBytes: len(body), MaxDecodedBytes: 1, MaxInflightBytes: 1, QueueTimeout: time.Minute})
	app := queryapi.New(queryapi.Options{Ingest: col.Handle})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	t.Cleanup(func() { app.Shutdown() })
	url := "http://" + ln.Addr().String() + "/v1/events"
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(url, "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-add.entered // the first request holds the whole budget
	resp, err := http.Post(url, "application/x-ndjson", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second request: %s, Retry-After %q; want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	close(add.release)
	if got := <-first; got != http.StatusOK {
		t.Errorf("first request: %d, want 200", got)
	}
	if st := col.Stats(); st.Shed != 1 || st.Accepted != 1 {
		t.Errorf("stats %+v: want one shed, one accepted", st)
	}
}

// TestStreamedBodies: bodies are read by the collector under its byte
// budget: a chunked body of unknown length is accepted, and one past
// MaxBodyBytes is refused with 413 as it arrives. (TestInflightBytesShed
// covers the 503 of a body that finds no room.)
func TestStreamedBodies(t *testing.T) {
	s := start(t, collector.Options{MaxBodyBytes: 64 << 10})
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/events", io.MultiReader(strings.NewReader(ok1+"\n"), strings.NewReader(strings.Replace(ok1, "ok-1", "ok-2", 1))))
	if req.ContentLength != 0 || req.TransferEncoding != nil {
		t.Fatalf("request length %d: want an unknown length (chunked)", req.ContentLength)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(raw), `"accepted":2`) {
		t.Errorf("chunked body: %d %s", resp.StatusCode, raw)
	}

	t.Run("chunked past the limit", func(t *testing.T) {
		// Sent whole with its last chunk, so the server has read all of it
		// when it answers and the close cannot reset the answer away.
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fill := bytes.Repeat([]byte{' '}, 100<<10)
		fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(fill), fill)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != 413 || a.Field != "body" {
			t.Errorf("status %d, body %+v (%v), want 413 naming the body", resp.StatusCode, a, err)
		}
	})

	if st := s.col.Stats(); st.Accepted != 2 || st.BadBodies != 1 {
		t.Errorf("stats %+v: want 2 accepted, 1 bad body", st)
	}
}
