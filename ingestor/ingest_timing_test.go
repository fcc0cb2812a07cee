package ingestor_test

import (
	"testing"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/eventjson"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
)

// BenchmarkDecodeAppendEncode is the per-event client cost of ingest:
// JSON decode and validation, column append, block merge and Native encode.
func BenchmarkDecodeAppendEncode(b *testing.B) {
	const block = 10000
	src := generator.New(generator.Options{Seed: 1, DuplicateShare: -1})
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
