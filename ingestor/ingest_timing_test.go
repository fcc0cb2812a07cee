package ingestor_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/eventjson"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
)

// BenchmarkDecodeAppendEncode is the per-event client cost of ingest:
// JSON decode and validation, column append, block merge and Native encode.
func BenchmarkDecodeAppendEncode(b *testing.B) {
	const block = 10000
	src := generator.New(generator.Options{Seed: 1, DuplicateShare: -1, BadShare: -1})
	var body []byte
	for range block {
		body = append(src.AppendNext(body), '\n')
	}
	var (
		dec        eventjson.Decoder
		req, batch ingestor.Rows
		buf        proto.Buffer
	)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Reset()
		batch.Reset()
		err := dec.Each(body, func(_ int, _ []byte, ev *clickagg.Event, err error) error {
			if err != nil {
				return err
			}
			req.Append(ev, false)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		batch.AppendRows(&req)
		buf.Reset()
		if err := batch.EncodeNative(&buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	perEvent := float64(b.Elapsed().Nanoseconds()) / float64(b.N*block)
	b.ReportMetric(perEvent, "ns/event")
	b.ReportMetric(1e9/perEvent, "events/s")
}

// BenchmarkIngestNull is the client side of ingest alone: rows through the
// Ingestor (block building, Native encode, LZ4, HTTP) into an events table
// with ENGINE = Null, so ClickHouse only parses the blocks.
func BenchmarkIngestNull(b *testing.B) {
	db := testenv.ClickHouse(b)
	ddl, err := os.ReadFile("../schema/migrations/000001_events.up.sql")
	if err != nil {
		b.Fatal(err)
	}
	s := string(ddl)
	testenv.Exec(b, db, s[:strings.Index(s, "ENGINE")]+"ENGINE = Null")
	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: db.HTTPURL, Database: db.Database})
	if err != nil {
		b.Fatal(err)
	}
	const block = 10000
	src := generator.New(generator.Options{Seed: 1, DuplicateShare: -1, BadShare: -1})
	var dec eventjson.Decoder
	var rows ingestor.Rows
	for range block {
		var ev clickagg.Event
		if err := dec.Decode(src.AppendNext(nil), &ev); err != nil {
			b.Fatal(err)
		}
		rows.Append(&ev, false)
	}
	in := ingestor.New(tr, ingestor.Options{Linger: time.Millisecond, MaxRows: 65536})
	defer in.Close(context.Background())
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 4 { // requests in flight, as the collector has
		wg.Go(func() {
			for i := 0; i < b.N/4+1; i++ {
				if err := in.Add(ctx, &rows); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	events := float64((b.N/4 + 1) * 4 * block)
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
}
