package eventjson

import (
	"testing"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/generator"
)

// generated returns n generator events, one a line, as the collector
// receives them.
func generated(n int) []byte {
	src := generator.New(generator.Options{Seed: 1, DuplicateShare: -1, BadShare: -1})
	var body []byte
	for range n {
		body = append(src.AppendNext(body), '\n')
	}
	return body
}

// BenchmarkEach is decoding and validation alone, per event of an NDJSON
// body of generator events.
func BenchmarkEach(b *testing.B) {
	const n = 500
	body := generated(n)
	var d Decoder
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		err := d.Each(body, func(_ int, _ []byte, _ *clickagg.Event, err error) error { return err })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}
