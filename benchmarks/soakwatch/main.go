// Command soakwatch samples a running clickagg serve for benchmarks/soak.sh:
// every interval its RSS (from /proc), and from GET /metrics its heap,
// live heap (as of the last GC), goroutines, accepted events and buffered
// rows (from /v1/ingest/status when /metrics is absent). It prints a row per
// sample, then the slopes of RSS, live heap and goroutines over the second
// half of the run, each half's accepted rate (and, with --clickhouse, the
// rows ClickHouse merged per event) and whether RSS and goroutines are flat.
//
//	soakwatch --pid PID --url http://127.0.0.1:PORT --duration 1h [--every 10s] [--settle 60s] [--clickhouse URL]
//	soakwatch --free-port   (prints a free TCP port on 127.0.0.1)
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Flat is an RSS slope under rssFlat MiB/min and a goroutine slope under
// goroutinesFlat per minute, fitted over the second half.
const (
	rssFlat        = 1.0
	goroutinesFlat = 1.0
)

type sample struct {
	at         time.Duration
	rssMiB     float64
	heapMiB    float64 // NaN: unknown
	liveMiB    float64 // live heap at the last GC; NaN: unknown
	goroutines float64 // NaN: unknown (no /metrics)
	conns      float64 // open HTTP connections; NaN: unknown
	threads    float64
	accepted   float64 // cumulative; NaN: unknown
	buffered   float64 // NaN: unknown
	dedupIDs   float64 // NaN: unknown
	merged     float64 // ClickHouse's MergedRows so far; NaN: unknown
}

func main() {
	pid := flag.Int("pid", 0, "process id of clickagg serve")
	url := flag.String("url", "", "clickagg base URL, e.g. http://127.0.0.1:18090")
	every := flag.Duration("every", 10*time.Second, "sampling interval")
	duration := flag.Duration("duration", time.Hour, "how long to sample")
	strict := flag.Bool("strict", false, "exit 3 unless flat")
	settle := flag.Duration("settle", 0, "after sampling (the load has stopped), wait up to this long for the goroutines to be back to their count before the load")
	freePort := flag.Bool("free-port", false, "print a free TCP port on 127.0.0.1 and exit")
	chURL := flag.String("clickhouse", "", "ClickHouse HTTP URL: also report the rows it merged per event accepted")
	flag.Parse()
	if *freePort {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal(err)
		}
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		return
	}
	if *pid <= 0 || *url == "" || *every <= 0 {
		fatal(errors.New("want --pid, --url and a positive --every"))
	}
	base := strings.TrimSuffix(*url, "/")
	client := &http.Client{Timeout: 5 * time.Second}

	fmt.Printf("%8s %8s %8s %8s %10s %5s %7s %10s %9s %10s\n", "elapsed", "rss_MiB", "heap_MiB", "live_MiB", "goroutines", "conns", "threads", "accepted/s", "buffered", "dedup_ids")
	var all []sample
	start := time.Now()
	source := ""
	for i := 0; ; i++ {
		// Sample on a fixed grid so a slow scrape does not shift later ones.
		if d := time.Until(start.Add(time.Duration(i) * *every)); d > 0 {
			time.Sleep(d)
		}
		s, src, err := take(client, base, *pid)
		if err != nil {
			fatal(err)
		}
		s.at = time.Since(start)
		if *chURL != "" {
			// A failed read leaves a gap, not the end of the soak.
			s.merged, _ = mergedRows(client, *chURL)
		}
		if source == "" {
			source = src
		}
		rate := math.NaN()
		if n := len(all); n > 0 {
			prev := all[n-1]
			rate = (s.accepted - prev.accepted) / (s.at - prev.at).Seconds()
		}
		all = append(all, s)
		fmt.Printf("%7.0fs %8.1f %8s %8s %10s %5s %7.0f %10s %9s %10s\n", s.at.Seconds(), s.rssMiB,
			num(s.heapMiB, 1), num(s.liveMiB, 1), num(s.goroutines, 0), num(s.conns, 0), s.threads, num(rate, 0), num(s.buffered, 0), num(s.dedupIDs, 0))
		if s.at >= *duration-*every/2 {
			break
		}
	}

	fmt.Printf("source: %s\n", source)
	half := all[len(all)-1].at / 2
	var tail []sample
	for _, s := range all {
		if s.at >= half {
			tail = append(tail, s)
		}
	}
	if len(tail) < 3 {
		fmt.Println("verdict: too few samples in the second half to fit a slope")
		return
	}
	rss, rssErr := slope(tail, func(s sample) float64 { return s.rssMiB })
	// fasthttp serves each open connection from its own goroutine, and the
	// client opens more connections whenever ClickHouse slows and more
	// requests overlap: those goroutines follow the client, not a leak.
	// What is left beyond them is what must stay flat.
	what, count := "goroutines beyond open connections", func(s sample) float64 { return s.goroutines - s.conns }
	switch {
	case math.IsNaN(tail[0].goroutines):
		// Without /metrics the closest count /proc has is the threads.
		what, count = "threads", func(s sample) float64 { return s.threads }
	case math.IsNaN(tail[0].conns):
		what, count = "goroutines", func(s sample) float64 { return s.goroutines }
	}
	g, gErr := slope(tail, count)
	// The median of pairwise slopes (Theil-Sen) is not moved by a burst
	// of a few samples, as a neighbour's load on a shared machine makes.
	rssMed := medianSlope(tail, func(s sample) float64 { return s.rssMiB })
	gMed := medianSlope(tail, count)
	// The live heap does not swing with the GC cycle as the heap in use
	// does (it still carries what is in flight at the last GC).
	liveMed := medianSlope(tail, func(s sample) float64 { return s.liveMiB })
	fmt.Printf("median pairwise slopes: RSS %+.2f MiB/min, live heap %s MiB/min, %s %+.2f/min (goroutines alone %s/min)\n",
		rssMed, num(liveMed, 2), what, gMed, num(medianSlope(tail, func(s sample) float64 { return s.goroutines }), 2))
	// Rows waiting for ClickHouse are held in memory until committed: when
	// ClickHouse slows (its merges grow with the table, on the same cores
	// here) the backlog and the memory rise together. Fitting the live heap
	// on time and the backlog at once separates the two: the time term is
	// what grows whatever the backlog, a leak.
	if perMin, perRow, ok := fitTwo(tail, func(s sample) float64 { return s.liveMiB }, func(s sample) float64 { return s.buffered }); ok {
		fmt.Printf("backlog: buffered rows %s/min (median slope); live heap = %+.2f MiB/min × time %+.2f MiB per 10 000 buffered rows + c\n",
			num(medianSlope(tail, func(s sample) float64 { return s.buffered }), 0), perMin, perRow*1e4)
	}
	// Under a closed loop (RATE=-1) the second half's rate is what this box
	// sustains into a table that has grown for the first half: ClickHouse's
	// merges, not the first minutes into an empty table, set that rate.
	var head []sample
	for _, s := range all {
		if s.at <= half {
			head = append(head, s)
		}
	}
	fmt.Printf("accepted: median %s events/s over the second half, %s over the first\n",
		num(acceptedRate(tail), 0), num(acceptedRate(head), 0))
	if *chURL != "" {
		// Merges grow with the table until it reaches its working depth;
		// while this figure rises, so does the work clickagg holds in flight.
		fmt.Printf("clickhouse: %s rows merged per event accepted over the first half, %s over the second\n",
			num(mergedPerEvent(head), 1), num(mergedPerEvent(tail), 1))
	}
	flat := math.Abs(rssMed) < rssFlat && gMed < goroutinesFlat
	if *settle > 0 && !math.IsNaN(all[0].goroutines) {
		// Goroutines under load follow requests in flight (fasthttp keeps
		// a worker per busy connection); a leak shows once the load is gone.
		// fasthttp ends an idle worker only on its next sweep after 10 s
		// idle, up to 20 s, so the count is polled rather than read once.
		after, waited, back := settled(*settle, func() sample {
			s, _, err := take(client, base, *pid)
			if err != nil {
				fatal(err)
			}
			return s
		}, all[0].goroutines)
		fmt.Printf("after the load: %s goroutines (%s before it) after %s, RSS %.1f MiB, heap %s MiB: %s\n",
			num(after.goroutines, 0), num(all[0].goroutines, 0), waited.Round(time.Second), after.rssMiB, num(after.heapMiB, 1),
			map[bool]string{true: "back", false: "NOT back within " + settle.String()}[back])
		flat = flat && back
	}
	word := "flat"
	if !flat {
		word = "NOT flat"
	}
	// ± is the slope's standard error: with few samples, requests in
	// flight move the goroutine count by a few and the slope by more.
	fmt.Printf("verdict: least squares RSS %+.2f ± %.2f MiB/min, %s %+.2f ± %.2f/min over the second half (%d samples, %.0fs..%.0fs): %s (bar, on the median slopes: |RSS| < %g MiB/min, %s < %g/min, and goroutines back after the load)\n",
		rss, rssErr, what, g, gErr, len(tail), tail[0].at.Seconds(), tail[len(tail)-1].at.Seconds(), word, rssFlat, what, goroutinesFlat)
	if *strict && !flat {
		os.Exit(3)
	}
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// slope is the least-squares slope of f against time, per minute, and its
// standard error.
func slope(ss []sample, f func(sample) float64) (b, se float64) {
	var n, mx, my float64
	for _, s := range ss {
		n++
		mx += s.at.Minutes()
		my += f(s)
	}
	mx, my = mx/n, my/n
	var sxx, sxy float64
	for _, s := range ss {
		dx := s.at.Minutes() - mx
		sxx += dx * dx
		sxy += dx * (f(s) - my)
	}
	b = sxy / sxx
	var rss float64
	for _, s := range ss {
		r := f(s) - my - b*(s.at.Minutes()-mx)
		rss += r * r
	}
	return b, math.Sqrt(rss / (n - 2) / sxx)
}

// fitTwo fits y = a + b·t + c·x by least squares over ss, t in minutes,
// and returns b and c; ok is false when y or x is unknown or the fit is
// singular.
func fitTwo(ss []sample, y, x func(sample) float64) (b, c float64, ok bool) {
	var n, mt, mx, my float64
	for _, s := range ss {
		if math.IsNaN(y(s)) || math.IsNaN(x(s)) {
			return 0, 0, false
		}
		n++
		mt += s.at.Minutes()
		mx += x(s)
		my += y(s)
	}
	mt, mx, my = mt/n, mx/n, my/n
	var stt, sxx, stx, sty, sxy float64
	for _, s := range ss {
		dt, dx, dy := s.at.Minutes()-mt, x(s)-mx, y(s)-my
		stt += dt * dt
		sxx += dx * dx
		stx += dt * dx
		sty += dt * dy
		sxy += dx * dy
	}
	det := stt*sxx - stx*stx
	if det == 0 {
		return 0, 0, false
	}
	return (sty*sxx - sxy*stx) / det, (sxy*stt - sty*stx) / det, true
}

// medianSlope is the Theil-Sen estimate: the median of the slopes between
// every two samples, per minute.
func medianSlope(ss []sample, f func(sample) float64) float64 {
	var ks []float64
	for i := range ss {
		for j := i + 1; j < len(ss); j++ {
			if dt := ss[j].at.Minutes() - ss[i].at.Minutes(); dt > 0 {
				ks = append(ks, (f(ss[j])-f(ss[i]))/dt)
			}
		}
	}
	return median(ks)
}

// settled samples every second until the goroutines are back to within two
// of before, for at most limit, and returns the last sample, how long it
// took and whether they came back.
func settled(limit time.Duration, take func() sample, before float64) (sample, time.Duration, bool) {
	start := time.Now()
	for {
		s := take()
		waited := time.Since(start)
		if s.goroutines <= before+2 {
			return s, waited, true
		}
		if waited >= limit {
			return s, waited, false
		}
		time.Sleep(min(time.Second, limit-waited))
	}
}

// acceptedRate is the median of the accepted events per second between
// consecutive samples.
func acceptedRate(ss []sample) float64 {
	var rs []float64
	for i := 1; i < len(ss); i++ {
		if dt := (ss[i].at - ss[i-1].at).Seconds(); dt > 0 && !math.IsNaN(ss[i].accepted-ss[i-1].accepted) {
			rs = append(rs, (ss[i].accepted-ss[i-1].accepted)/dt)
		}
	}
	return median(rs)
}

// mergedPerEvent is the rows ClickHouse merged per event accepted between
// the first and the last sample of ss that have both figures.
func mergedPerEvent(ss []sample) float64 {
	known := slices.DeleteFunc(slices.Clone(ss), func(s sample) bool { return math.IsNaN(s.merged) || math.IsNaN(s.accepted) })
	if len(known) < 2 {
		return math.NaN()
	}
	first, last := known[0], known[len(known)-1]
	if last.accepted == first.accepted {
		return math.NaN()
	}
	return (last.merged - first.merged) / (last.accepted - first.accepted)
}

// mergedRows reads ClickHouse's count of rows merged since it started (all
// tables: each event also lands in the views' tables).
func mergedRows(c *http.Client, chURL string) (float64, error) {
	q := "SELECT sum(value) FROM system.events WHERE event = 'MergedRows'"
	resp, err := get(c, strings.TrimSuffix(chURL, "/")+"/?query="+url.QueryEscape(q))
	if err != nil {
		return math.NaN(), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return math.NaN(), err
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return math.NaN(), fmt.Errorf("merged rows: %w", err)
	}
	return v, nil
}

// median sorts vs; NaN when empty.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 1 {
		return vs[n/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// take reads one sample and says where the process figures came from.
func take(c *http.Client, base string, pid int) (sample, string, error) {
	s := sample{heapMiB: math.NaN(), liveMiB: math.NaN(), goroutines: math.NaN(), conns: math.NaN(), accepted: math.NaN(), buffered: math.NaN(), dedupIDs: math.NaN(), merged: math.NaN()}
	st, err := procStatus(pid)
	if err != nil {
		return s, "", err
	}
	s.rssMiB, s.threads = st["VmRSS"]/1024, st["Threads"]
	m, err := scrape(c, base+"/metrics")
	if err == nil {
		s.heapMiB = m.get("go_memstats_heap_inuse_bytes") / (1 << 20)
		s.liveMiB = m.get("go_gc_heap_live_bytes") / (1 << 20)
		s.goroutines = m.get("go_goroutines")
		s.conns = m.get("clickagg_http_open_connections")
		s.accepted = m.get(`clickagg_ingest_events_total{outcome="accepted"}`)
		s.buffered = m.get("clickagg_ingest_buffered_rows")
		s.dedupIDs = m.get("clickagg_dedup_ids")
		return s, "/proc/" + strconv.Itoa(pid) + "/status and /metrics", nil
	}
	var status struct {
		Collector struct{ Accepted float64 }
		Ingestor  struct {
			BufferedRows float64 `json:"buffered_rows"`
		}
		Dedup struct{ Entries float64 }
	}
	if err := getJSON(c, base+"/v1/ingest/status", &status); err != nil {
		return s, "", fmt.Errorf("neither /metrics nor /v1/ingest/status: %w", err)
	}
	s.accepted, s.buffered, s.dedupIDs = status.Collector.Accepted, status.Ingestor.BufferedRows, status.Dedup.Entries
	return s, "/proc/" + strconv.Itoa(pid) + "/status and /v1/ingest/status (no /metrics: " + err.Error() + ")", nil
}

// procStatus reads the numeric fields of /proc/PID/status (kB for sizes).
func procStatus(pid int) (map[string]float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if f := strings.Fields(v); ok && len(f) > 0 {
			if x, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[k] = x
			}
		}
	}
	return out, nil
}

// scrape reads Prometheus text format into series (name plus labels as
// written) → value. Enough for the few series soakwatch reads; a missing
// one reads as NaN.
func scrape(c *http.Client, url string) (nanMap, error) {
	resp, err := get(c, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := nanMap{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexAny(line, " \t"); i >= 0 {
			series, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[series] = v
		}
	}
	if len(out) == 0 {
		return nil, errors.New(url + ": no samples")
	}
	return out, sc.Err()
}

type nanMap map[string]float64

func (m nanMap) get(k string) float64 {
	if v, ok := m[k]; ok {
		return v
	}
	return math.NaN()
}

func getJSON(c *http.Client, url string, v any) error {
	resp, err := get(c, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func get(c *http.Client, url string) (*http.Response, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "soakwatch:", err)
	os.Exit(1)
}
