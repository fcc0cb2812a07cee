// Command ingestbench measures ingest end to end on a fixed generated corpus
// (deterministic seed, Zipf ads) into the same schema with every
// materialized view, by one of five peers: clickagg's collector; ClickHouse's
// own loader (clickhouse-client, JSONEachRow); a plain clickhouse-go/v2
// columnar batch insert over native TCP; and the collector's client pattern
// posting JSONEachRow straight to ClickHouse's HTTP interface, into events
// or into a Buffer table in front of it. benchmarks/ingest.sh runs them all
// against fresh databases and prints the tables.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/generator"
)

// config is the command line.
type config struct {
	mode, target, client, native, httpURL, db, table, result string
	events, ads, clients, batch, pid, goBatch, maxRetries    int
	seed                                                     uint64
}

func main() {
	var c config
	flag.StringVar(&c.mode, "mode", "collector", "collector (POST /v1/events), loader (clickhouse-client INSERT ... FORMAT JSONEachRow), go (clickhouse-go/v2 columnar batches) or http (INSERT ... FORMAT JSONEachRow POSTed to ClickHouse's HTTP interface)")
	flag.IntVar(&c.events, "events", 2_000_000, "events in the corpus")
	flag.Uint64Var(&c.seed, "seed", 1, "generator seed")
	flag.IntVar(&c.ads, "ads", 10000, "distinct ads (Zipf)")
	flag.StringVar(&c.target, "target", "http://127.0.0.1:8080", "collector base URL")
	flag.IntVar(&c.clients, "clients", 8, "concurrent requests, for --mode collector and http")
	flag.IntVar(&c.batch, "batch", 5000, "events per request, for --mode collector and http")
	flag.IntVar(&c.pid, "pid", 0, "clickagg's pid, for its peak RSS")
	flag.StringVar(&c.client, "clickhouse-client", "clickhouse-client --host 127.0.0.1 --port 9000 --database clickagg", "loader command line, without --query")
	flag.StringVar(&c.native, "clickhouse-native", "127.0.0.1:9000", "ClickHouse native address, for --mode go")
	flag.StringVar(&c.httpURL, "clickhouse-http", "http://127.0.0.1:8123", "ClickHouse HTTP interface, for --mode http")
	flag.StringVar(&c.db, "database", "clickagg", "ClickHouse database, for --mode go and http")
	flag.StringVar(&c.table, "table", "events", "table to insert into, for --mode http (a Buffer table in front of events, say)")
	flag.IntVar(&c.maxRetries, "max-retries", 20, "retries of a failed request before it is given up, for --mode http")
	flag.IntVar(&c.goBatch, "go-batch", 1<<20, "rows per clickhouse-go batch (default: ClickHouse's max_insert_block_size, the loader's block)")
	flag.StringVar(&c.result, "result", "", "file to write the figures to, one \"name value\" a line, for benchmarks/ingest.sh")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "ingestbench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	r, err := load(c, corpus(c.events, c.seed, c.ads))
	if err != nil || c.result == "" {
		return err
	}
	return r.write(c.result)
}

// load runs the mode's peer on the corpus and prints its line.
func load(c config, lines [][]byte) (result, error) {
	switch c.mode {
	case "collector":
		return collector(lines, c)
	case "go":
		return goBatches(lines, chclient.Options{Native: c.native, Database: c.db}, c.goBatch)
	case "loader", "http":
		rows, err := tableRows(lines)
		if err != nil {
			return result{}, err
		}
		if c.mode == "loader" {
			return loader(rows, c.client)
		}
		return direct(rows, c)
	}
	return result{}, fmt.Errorf("unknown mode %q", c.mode)
}

// corpus generates the events as NDJSON lines. Event time starts an hour
// before the current hour, so the same seed gives the same events for an
// hour and every event is within the collector's allowed lateness.
func corpus(n int, seed uint64, ads int) [][]byte {
	start := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	src := generator.New(generator.Options{Seed: seed, Ads: ads, Start: start, Rate: max(n/3000, 1), LateShare: -1, DuplicateShare: -1, BadShare: -1})
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = src.AppendNext(nil)
	}
	return lines
}

// result is what one timed load measured.
type result struct {
	events  int // loaded: in requests answered 200, where there are requests
	elapsed time.Duration
	// cpu is this process's CPU during the load plus that of the children
	// it waited for (clickhouse-client for the loader).
	cpu                        time.Duration
	acks                       *hdrhistogram.Histogram // µs, of the answered attempt; nil without requests
	retries, givenUp, accepted int64
	failures                   map[string]int // answers by status and first line
}

func (r result) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }

// ack is the acknowledgement latency at quantile q in ms, or "-".
func (r result) ack(q float64) string {
	if r.acks == nil || r.acks.TotalCount() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(r.acks.ValueAtQuantile(q))/1000)
}

// line is the start of the line each mode prints: peer, size, how, rate
// and, where there were requests, the acknowledgement latency.
// benchmarks/cluster.sh reads fields 4 to 6 of the collector's.
func (r result) line(peer, how string) string {
	s := fmt.Sprintf("%s\t%d events\t%s\t%.0f events/s", peer, r.events, how, r.rate())
	if r.acks != nil {
		s += fmt.Sprintf("\tack p50 %s ms\tp99 %s ms", r.ack(50), r.ack(99))
	}
	return s
}

// write saves the figures for benchmarks/ingest.sh.
func (r result) write(path string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "rate %.0f\np50 %s\np99 %s\ncpu %.3f\nretries %d\ngiven_up %d\n",
		r.rate(), r.ack(50), r.ack(99), r.cpu.Seconds(), r.retries, r.givenUp)
	for _, f := range r.failureLines() {
		fmt.Fprintf(&b, "failure %s\n", f)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("result file: %w", err)
	}
	return nil
}

// failureLines are the failed answers, "count × status first line", in
// the order of their text.
func (r result) failureLines() []string {
	var ls []string
	for _, k := range slices.Sorted(maps.Keys(r.failures)) {
		ls = append(ls, fmt.Sprintf("%d × %s", r.failures[k], k))
	}
	return ls
}

// timer measures the wall time and the CPU of a load.
type timer struct {
	start time.Time
	cpu   time.Duration
}

func startTimer() timer { return timer{time.Now(), cpuUsed()} }

// stop sets r's elapsed and CPU time.
func (t timer) stop(r *result) {
	r.elapsed = time.Since(t.start)
	r.cpu = cpuUsed() - t.cpu
}

// cpuUsed is the user and system CPU of this process and of the children
// it has waited for.
func cpuUsed() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var u syscall.Rusage
		if syscall.Getrusage(who, &u) == nil {
			total += time.Duration(u.Utime.Nano() + u.Stime.Nano())
		}
	}
	return total
}
