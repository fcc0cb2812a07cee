package generator

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"net/netip"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
)

var testStart = time.Date(2026, 11, 22, 4, 21, 15, 0, time.UTC)

// wireEvent is the event as the collector decodes it.
type wireEvent struct {
	EventID     string `json:"event_id"`
	Type        string `json:"type"`
	TS          string `json:"ts"`
	AdID        string `json:"ad_id"`
	CampaignID  string `json:"campaign_id"`
	UserID      string `json:"user_id"`
	IP          string `json:"ip"`
	Country     string `json:"country"`
	AdFormat    string `json:"ad_format"`
	Device      string `json:"device"`
	PriceMicros uint64 `json:"price_micros"`
}

func generate(o Options, n int) [][]byte {
	s := New(o)
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = s.AppendNext(nil)
	}
	return lines
}

// stream generates n lines and decodes them on all CPUs.
func stream(t *testing.T, o Options, n int) ([][]byte, []wireEvent) {
	t.Helper()
	lines := generate(o, n)
	events := make([]wireEvent, n)
	chunk := n/runtime.GOMAXPROCS(0) + 1
	var wg sync.WaitGroup
	for from := 0; from < n; from += chunk {
		wg.Go(func() {
			for i := from; i < min(from+chunk, n); i++ {
				if err := json.Unmarshal(lines[i], &events[i]); err != nil {
					t.Errorf("line %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return lines, events
}

func decode(t *testing.T, line []byte) wireEvent {
	t.Helper()
	var e wireEvent
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decode %s: %v", line, err)
	}
	return e
}

func TestDeterministic(t *testing.T) {
	o := Options{Seed: 7, Start: testStart}
	a, b := generate(o, 5000), generate(o, 5000)
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("line %d differs with the same seed:\n%s\n%s", i, a[i], b[i])
		}
	}
	o.Seed = 8
	c := generate(o, 5000)
	same := 0
	for i := range a {
		if bytes.Equal(a[i], c[i]) {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d of %d lines equal across seeds 7 and 8", same, len(a))
	}
}

func TestEventsValid(t *testing.T) {
	types := set(clickagg.EventTypes())
	formatNames := set(clickagg.AdFormats())
	deviceNames := set(clickagg.Devices())
	tsForm := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	adForm := regexp.MustCompile(`^ad-\d{6}$`)
	campaignForm := regexp.MustCompile(`^cmp-\d{4}$`)
	fields := []string{"event_id", "type", "ts", "ad_id", "campaign_id", "user_id", "ip", "country", "ad_format", "device", "price_micros"}
	slices.Sort(fields)

	campaignOf, formatOf := map[string]string{}, map[string]string{}
	campaigns := map[string]bool{}
	ips6 := 0
	const n = 20_000
	for i, line := range generate(Options{Seed: 3, Start: testStart, BadShare: -1}, n) {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(line, &raw); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if got := slices.Sorted(maps.Keys(raw)); !slices.Equal(got, fields) {
			t.Fatalf("line %d has fields %v, want %v", i, got, fields)
		}
		e := decode(t, line)
		ts, err := time.Parse(time.RFC3339Nano, e.TS)
		ip, ipErr := netip.ParseAddr(e.IP)
		switch {
		case e.EventID == "" || len(e.EventID) > clickagg.MaxIDLen:
			t.Fatalf("line %d: bad event_id %q", i, e.EventID)
		case !types[e.Type]:
			t.Fatalf("line %d: bad type %q", i, e.Type)
		case err != nil || !tsForm.MatchString(e.TS) || ts.After(testStart.Add(time.Minute)):
			t.Fatalf("line %d: bad ts %q (%v)", i, e.TS, err)
		case !adForm.MatchString(e.AdID) || !campaignForm.MatchString(e.CampaignID):
			t.Fatalf("line %d: bad ad_id %q or campaign_id %q", i, e.AdID, e.CampaignID)
		case e.UserID == "":
			t.Fatalf("line %d: empty user_id", i)
		case ipErr != nil || !ip.IsGlobalUnicast() || ip.IsPrivate():
			t.Fatalf("line %d: bad ip %q (%v)", i, e.IP, ipErr)
		case !clickagg.ValidCountry(e.Country) || e.Country == clickagg.UnknownCountry:
			t.Fatalf("line %d: bad country %q", i, e.Country)
		case !formatNames[e.AdFormat] || !deviceNames[e.Device]:
			t.Fatalf("line %d: bad ad_format %q or device %q", i, e.AdFormat, e.Device)
		case e.PriceMicros == 0:
			t.Fatalf("line %d: free event", i)
		}
		if c, ok := campaignOf[e.AdID]; ok && c != e.CampaignID {
			t.Fatalf("ad %s in campaigns %s and %s", e.AdID, c, e.CampaignID)
		}
		if f, ok := formatOf[e.AdID]; ok && f != e.AdFormat {
			t.Fatalf("ad %s has formats %s and %s", e.AdID, f, e.AdFormat)
		}
		campaignOf[e.AdID], formatOf[e.AdID] = e.CampaignID, e.AdFormat
		campaigns[e.CampaignID] = true
		if ip.Is6() {
			ips6++
		}
	}
	if len(campaigns) < 10 || len(campaigns) > 60 {
		t.Errorf("%d campaigns, want about 1000/20", len(campaigns))
	}
	if ips6 == 0 || ips6 > n/5 {
		t.Errorf("%d IPv6 addresses in %d events, want a few", ips6, n)
	}
}

func set(names []string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// TestStatistics checks the shape of one long stream: ad popularity, the
// type, country and device mix, prices, late events and duplicates.
func TestStatistics(t *testing.T) {
	const n, rate = 300_000, 1000
	lines, events := stream(t, Options{Seed: 11, Start: testStart, Rate: rate, BadShare: -1}, n)
	t.Run("zipf", func(t *testing.T) { checkZipf(t, events, 1000) })
	t.Run("mix", func(t *testing.T) { checkMix(t, events) })
	t.Run("prices", func(t *testing.T) { checkPrices(t, events) })
	t.Run("late and duplicates", func(t *testing.T) { checkLateAndDuplicates(t, lines, events, rate) })
}

func checkZipf(t *testing.T, events []wireEvent, ads int) {
	perAd := make(map[string]int, ads)
	for _, e := range events {
		perAd[e.AdID]++
	}
	counts := slices.Sorted(maps.Values(perAd))
	counts = append(make([]int, ads-len(counts)), counts...) // ads never seen
	top, median := counts[ads-1], counts[ads/2]
	if top < 20*max(median, 1) {
		t.Errorf("top ad has %d events, median ad %d: want a hot ad", top, median)
	}
	if median == 0 {
		t.Errorf("median ad has no events: the tail is too thin")
	}
}

func checkMix(t *testing.T, events []wireEvent) {
	n := float64(len(events))
	type tally struct{ imp, click, conv int }
	byFormat := map[string]*tally{}
	byCountry, byDevice := map[string]int{}, map[string]int{}
	for _, e := range events {
		tl := byFormat[e.AdFormat]
		if tl == nil {
			tl = &tally{}
			byFormat[e.AdFormat] = tl
		}
		switch e.Type {
		case "impression":
			tl.imp++
		case "click":
			tl.click++
		case "conversion":
			tl.conv++
		}
		byCountry[e.Country]++
		byDevice[e.Device]++
	}
	var convs, wantConvs float64
	for name, tl := range byFormat {
		f, _ := clickagg.ParseAdFormat(name)
		spec := formats[f]
		ctr := float64(tl.click) / float64(tl.imp)
		// 4 standard deviations of the click count, and at least 10 %.
		tol := max(4/math.Sqrt(float64(tl.imp)*spec.ctr), 0.1)
		if math.Abs(ctr/spec.ctr-1) > tol {
			t.Errorf("%s: CTR %.4f over %d impressions, want %.4f ± %.0f%%", name, ctr, tl.imp, spec.ctr, tol*100)
		}
		convs += float64(tl.conv)
		wantConvs += float64(tl.click) * spec.cvr
	}
	if math.Abs(convs/wantConvs-1) > 0.25 {
		t.Errorf("%.0f conversions, want about %.0f", convs, wantConvs)
	}
	if us := float64(byCountry["US"]) / n; us < 0.25 || us > 0.35 {
		t.Errorf("US share %.3f, want about 0.3", us)
	}
	if android := float64(byDevice["android"]) / n; android < 0.4 || android > 0.5 {
		t.Errorf("android share %.3f, want about 0.45", android)
	}
	if len(byDevice) != len(clickagg.Devices()) || len(byCountry) < 20 {
		t.Errorf("%d devices and %d countries seen, want all devices and a tail of countries", len(byDevice), len(byCountry))
	}
}

func checkPrices(t *testing.T, events []wireEvent) {
	sum := map[string]float64{}
	num := map[string]int{}
	for _, e := range events {
		if e.Country != "US" {
			continue
		}
		k := e.AdFormat + "/" + e.Type
		sum[k] += float64(e.PriceMicros)
		num[k]++
	}
	// Mean US prices: the ad factor and noise average 1.
	for _, c := range []struct {
		key       string
		low, high float64
	}{
		{"banner/impression", 1_000, 2_000},
		{"rewarded_video/impression", 10_000, 20_000},
		{"banner/click", 150_000, 400_000},
		{"rewarded_video/click", 120_000, 300_000},
		{"rewarded_video/conversion", 3_000_000, 10_000_000},
	} {
		if num[c.key] == 0 {
			t.Errorf("no %s events", c.key)
			continue
		}
		if mean := sum[c.key] / float64(num[c.key]); mean < c.low || mean > c.high {
			t.Errorf("%s: mean price %.0f micros, want %.0f..%.0f", c.key, mean, c.low, c.high)
		}
	}
}

func checkLateAndDuplicates(t *testing.T, lines [][]byte, events []wireEvent, rate int) {
	n := float64(len(lines))
	first := map[string]int{}
	late, dups := 0, 0
	for i, line := range lines {
		e := events[i]
		if j, ok := first[e.EventID]; ok {
			dups++
			if !bytes.Equal(line, lines[j]) {
				t.Fatalf("line %d resends %s but differs from line %d:\n%s\n%s", i, e.EventID, j, line, lines[j])
			}
			if i-j > 10*recentLines {
				t.Errorf("line %d resends line %d: too far back", i, j)
			}
			continue
		}
		first[e.EventID] = i
		clock := testStart.Add(time.Duration(i) * time.Second / time.Duration(rate))
		ts, _ := time.Parse(time.RFC3339Nano, e.TS)
		behind := clock.Sub(ts)
		switch {
		case behind > 59*time.Second && behind <= 3*time.Hour+time.Second:
			late++
		case behind > time.Second || behind < -time.Second:
			t.Fatalf("line %d: ts %s is %s behind the clock", i, e.TS, behind)
		}
	}
	within(t, "late events", late, 0.01*n, 0.15)
	within(t, "duplicates", dups, 0.001*n, 0.3)
}

func within(t *testing.T, what string, got int, want, tol float64) {
	t.Helper()
	if math.Abs(float64(got)/want-1) > tol {
		t.Errorf("%d %s, want %.0f ± %.0f%%", got, what, want, tol*100)
	}
}

func TestSharesConfigurable(t *testing.T) {
	lines := generate(Options{Seed: 19, Start: testStart, LateShare: -1, DuplicateShare: 0.05, BadShare: -1}, 50_000)
	seen := map[string]bool{}
	dups := 0
	for _, line := range lines {
		e := decode(t, line)
		if seen[e.EventID] {
			dups++
		}
		seen[e.EventID] = true
		if ts, _ := time.Parse(time.RFC3339Nano, e.TS); ts.Before(testStart) {
			t.Fatalf("late event with LateShare < 0: %s", line)
		}
	}
	within(t, "duplicates", dups, 0.05*50_000, 0.1)

	for _, line := range generate(Options{Seed: 19, DuplicateShare: -1, LateShare: -1, BadShare: -1, Now: func() time.Time { return testStart }}, 1000) {
		if e := decode(t, line); e.TS != "2026-11-22T04:21:15.000Z" {
			t.Fatalf("ts %s with a fixed Now clock", e.TS)
		}
	}
}

// warmSource returns a Source whose buffers of recent events are full, and
// a buffer for one event.
func warmSource() (*Source, []byte) {
	s := New(Options{Start: testStart})
	buf := make([]byte, 0, 1024)
	for range 10 * recentLines {
		buf = s.AppendNext(buf[:0])
	}
	return s, buf
}

func TestWallClock(t *testing.T) {
	before := time.Now().Truncate(time.Millisecond)
	e := decode(t, New(Options{LateShare: -1}).AppendNext(nil))
	ts, err := time.Parse(time.RFC3339Nano, e.TS)
	if err != nil || ts.Before(before) || ts.After(time.Now()) {
		t.Errorf("ts %s with the zero Options, want now (%v)", e.TS, err)
	}
}

func TestAppendNextAllocs(t *testing.T) {
	s, buf := warmSource()
	if a := testing.AllocsPerRun(10_000, func() { buf = s.AppendNext(buf[:0]) }); a != 0 {
		t.Errorf("AppendNext allocates %.2f times per event", a)
	}
}

func BenchmarkAppendNext(b *testing.B) {
	s, buf := warmSource()
	b.ReportAllocs()
	for b.Loop() {
		buf = s.AppendNext(buf[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func TestStamp(t *testing.T) {
	st := newStamp()
	for _, ts := range []time.Time{
		testStart.Add(123 * time.Millisecond),
		testStart.Add(999*time.Millisecond + 999*time.Microsecond),
		testStart.Add(time.Second + 7*time.Millisecond),
		testStart.Add(-3 * time.Hour),
		time.Date(1999, 12, 31, 23, 59, 59, 50_000_000, time.FixedZone("KST", 9*3600)),
	} {
		want := ts.UTC().Format("2006-01-02T15:04:05.000Z07:00")
		if got := string(st.append(nil, ts)); got != want {
			t.Errorf("stamp %v = %s, want %s", ts, got, want)
		}
	}
}
