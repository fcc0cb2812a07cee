// Command ingestbench measures ingest end to end on a fixed generated corpus
// (deterministic seed, Zipf ads): through clickagg's collector, or through
// two baselines: ClickHouse's own loader (clickhouse-client, JSONEachRow) and
// a plain clickhouse-go/v2 columnar batch insert over native TCP, into the
// same schema with every materialized view. benchmarks/ingest.sh runs all
// three against fresh databases and prints the table.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/eventjson"
	"github.com/clickagg/clickagg/generator"
)

func main() {
	var (
		mode    = flag.String("mode", "collector", "collector (POST /v1/events), loader (clickhouse-client INSERT ... FORMAT JSONEachRow) or go (clickhouse-go/v2 columnar batches)")
		events  = flag.Int("events", 2_000_000, "events in the corpus")
		seed    = flag.Uint64("seed", 1, "generator seed")
		ads     = flag.Int("ads", 10000, "distinct ads (Zipf)")
		target  = flag.String("target", "http://127.0.0.1:8080", "collector base URL")
		clients = flag.Int("clients", 8, "concurrent requests")
		batch   = flag.Int("batch", 5000, "events per request")
		pid     = flag.Int("pid", 0, "clickagg's pid, for its peak RSS")
		client  = flag.String("clickhouse-client", "clickhouse-client --host 127.0.0.1 --port 9000 --database clickagg", "loader command line, without --query")
		native  = flag.String("clickhouse-native", "127.0.0.1:9000", "ClickHouse native address, for --mode go")
		db      = flag.String("database", "clickagg", "ClickHouse database, for --mode go")
		rows    = flag.Int("go-batch", 1<<20, "rows per clickhouse-go batch (default: ClickHouse's max_insert_block_size, the loader's block)")
	)
	flag.Parse()
	lines := corpus(*events, *seed, *ads)
	var err error
	switch *mode {
	case "collector":
		err = collector(lines, *target, *clients, *batch, *pid)
	case "loader":
		err = loader(lines, *client)
	case "go":
		err = goBatches(lines, chclient.Options{Native: *native, Database: *db}, *rows)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingestbench:", err)
		os.Exit(1)
	}
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

func collector(lines [][]byte, target string, clients, size, pid int) error {
	type req struct {
		body   []byte
		events int
	}
	var reqs []req
	for i := 0; i < len(lines); i += size {
		end := min(i+size, len(lines))
		reqs = append(reqs, req{bytes.Join(lines[i:end], []byte("\n")), end - i})
	}
	queue := make(chan req, len(reqs))
	for _, r := range reqs {
		queue <- r
	}
	close(queue)
	var (
		mu       sync.Mutex
		hist     = hdrhistogram.New(1, 60_000_000, 3) // µs
		retries  atomic.Int64
		accepted atomic.Int64
		firstErr error
		wg       sync.WaitGroup
	)
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	url := strings.TrimSuffix(target, "/") + "/v1/events"
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for r := range queue {
				for {
					t0 := time.Now()
					resp, err := hc.Post(url, "application/x-ndjson", bytes.NewReader(r.body))
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
					var a struct{ Accepted int64 }
					json.NewDecoder(resp.Body).Decode(&a)
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusServiceUnavailable {
						retries.Add(1)
						time.Sleep(100 * time.Millisecond)
						continue
					}
					if resp.StatusCode != http.StatusOK {
						mu.Lock()
						firstErr = fmt.Errorf("status %s", resp.Status)
						mu.Unlock()
						return
					}
					mu.Lock()
					hist.RecordValue(time.Since(t0).Microseconds())
					mu.Unlock()
					accepted.Add(a.Accepted)
					break
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	fmt.Printf("collector\t%d events\t%d clients × %d events/request\t%.0f events/s\tack p50 %.1f ms\tp99 %.1f ms\t503 retries %d\taccepted %d\tpeak RSS %s\n",
		len(lines), clients, size, float64(len(lines))/elapsed.Seconds(),
		float64(hist.ValueAtQuantile(50))/1000, float64(hist.ValueAtQuantile(99))/1000, retries.Load(), accepted.Load(), peakRSS(pid))
	return nil
}

// loader converts the corpus to the events table's own columns (ClickHouse
// cannot map the API's JSON) and times clickhouse-client loading it. The ip
// column is left out: JSON cannot carry its 16 raw bytes.
func loader(lines [][]byte, command string) error {
	f, err := os.CreateTemp("", "ingestbench-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	var dec eventjson.Decoder
	var ev clickagg.Event
	enc := json.NewEncoder(w) // one object per line
	now := time.Now().UTC().Format(time.DateTime)
	for _, l := range lines {
		if err := dec.Decode(l, &ev); err != nil {
			return err
		}
		row := loaderRow{ev.EventID, ev.Type.String(), ev.Time.UTC().Format(time.DateTime), uint16(ev.Time.Nanosecond() / 1e6),
			ev.AdID, ev.CampaignID, ev.UserID, string(ev.Country[:]), ev.AdFormat.String(), ev.Device.String(), ev.PriceMicros, now, 0}
		if err := enc.Encode(&row); err != nil {
			return err
		}
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return err
	}
	in, err := os.Open(f.Name())
	if err != nil {
		return err
	}
	defer in.Close()
	args := append(strings.Fields(command), "--query", "INSERT INTO events FORMAT JSONEachRow")
	cmd := exec.CommandContext(context.Background(), args[0], args[1:]...)
	cmd.Stdin, cmd.Stderr = in, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	elapsed := time.Since(start)
	fmt.Printf("loader\t%d events\tclickhouse-client JSONEachRow\t%.0f events/s\n", len(lines), float64(len(lines))/elapsed.Seconds())
	return nil
}

// goBatches times a plain clickhouse-go/v2 columnar insert of the corpus in
// batches of size rows, one after another. The JSON is decoded into columns
// before the clock starts, as a client holding structs would have them.
// (18.16 needs the INSERT to name its columns; PLATFORM.md.)
func goBatches(lines [][]byte, o chclient.Options, size int) error {
	ctx := context.Background()
	conn, err := chclient.OpenNative(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	var (
		dec                                                  eventjson.Decoder
		ev                                                   clickagg.Event
		ids, types, ads, camps, users, countries, fmts, devs []string
		ts, received                                         []time.Time
		millis                                               []uint16
		ips                                                  [][]byte
		prices                                               []uint64
		dups                                                 []uint8
	)
	now := time.Now().UTC().Truncate(time.Second)
	for _, l := range lines {
		if err := dec.Decode(l, &ev); err != nil {
			return err
		}
		ids, types, ads, camps, users = append(ids, ev.EventID), append(types, ev.Type.String()), append(ads, ev.AdID), append(camps, ev.CampaignID), append(users, ev.UserID)
		countries, fmts, devs = append(countries, string(ev.Country[:])), append(fmts, ev.AdFormat.String()), append(devs, ev.Device.String())
		ts, millis, received = append(ts, ev.Time.Truncate(time.Second)), append(millis, uint16(ev.Time.Nanosecond()/1e6)), append(received, now)
		ips, prices, dups = append(ips, ev.IP[:]), append(prices, ev.PriceMicros), append(dups, 0)
	}
	const insert = "INSERT INTO events (event_id, type, ts, ts_millis, ad_id, campaign_id, user_id, ip, country, ad_format, device, price_micros, received_at, duplicate)"
	start := time.Now()
	for lo := 0; lo < len(lines); lo += size {
		hi := min(lo+size, len(lines))
		b, err := conn.PrepareBatch(ctx, insert)
		if err != nil {
			return fmt.Errorf("prepare batch: %w", err)
		}
		cols := []any{ids[lo:hi], types[lo:hi], ts[lo:hi], millis[lo:hi], ads[lo:hi], camps[lo:hi], users[lo:hi], ips[lo:hi],
			countries[lo:hi], fmts[lo:hi], devs[lo:hi], prices[lo:hi], received[lo:hi], dups[lo:hi]}
		for i, c := range cols {
			if err := b.Column(i).Append(c); err != nil {
				return fmt.Errorf("append column %d: %w", i, err)
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("send batch: %w", err)
		}
	}
	elapsed := time.Since(start)
	fmt.Printf("go\t%d events\tclickhouse-go/v2 batches of %d rows\t%.0f events/s\n", len(lines), size, float64(len(lines))/elapsed.Seconds())
	return nil
}

// peakRSS is the VmHWM of pid, or "-".
func peakRSS(pid int) string {
	if pid == 0 {
		return "-"
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "-"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "-"
}

// loaderRow is an event in the columns of the events table.
type loaderRow struct {
	EventID     string `json:"event_id"`
	Type        string `json:"type"`
	TS          string `json:"ts"`
	TSMillis    uint16 `json:"ts_millis"`
	AdID        string `json:"ad_id"`
	CampaignID  string `json:"campaign_id"`
	UserID      string `json:"user_id"`
	Country     string `json:"country"`
	AdFormat    string `json:"ad_format"`
	Device      string `json:"device"`
	PriceMicros uint64 `json:"price_micros"`
	ReceivedAt  string `json:"received_at"`
	Duplicate   uint8  `json:"duplicate"`
}
