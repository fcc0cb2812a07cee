package eventjson

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/generator"
)

// stale stands for what ev held before: a scan that gives up must leave it
// so, as fastjson does for text that is not JSON.
var stale = clickagg.Event{EventID: "stale", AdID: "stale", PriceMicros: 1}

// compareScan decodes data with the scanner and with fastjson alone, fails
// t on any difference in the event or the error, and says whether the
// scanner took data.
func compareScan(t *testing.T, data []byte) bool {
	t.Helper()
	var fast Decoder
	slow := Decoder{utf8: utf8.Valid(data)}
	fev, sev := stale, stale
	ffe, ok := fast.scan(data, &fev)
	sfe := slow.parse(data, &sev)
	if !ok {
		if fev != stale {
			t.Fatalf("%q: the scanner gave up but changed the event to %+v", data, fev)
		}
		return false
	}
	if (ffe == nil) != (sfe == nil) || ffe != nil && *ffe != *sfe {
		t.Fatalf("%q: error %v from the scanner, %v from fastjson", data, ffe, sfe)
	}
	if fev != sev {
		t.Fatalf("%q:\nscanner  %+v\nfastjson %+v", data, fev, sev)
	}
	return true
}

func TestScanMatchesFastjson(t *testing.T) {
	const req = `"event_id":"e","type":"click","ts":1763806530123,"ad_id":"a"`
	for _, tc := range []struct {
		in   string
		took bool // whether the scanner should take it rather than give up
	}{
		{good[:strings.Index(good, `,"extra"`)] + "}", true},
		{good, false}, // a nested value
		{" \t\r\n{ \"event_id\" :\n\"e\" ,\r\n\t\"type\"\t:\"click\" , \"ts\" : 1763806530123 ,\"ad_id\": 7 }\r\n ", true},
		// duplicate keys: the last wins unless an earlier one failed
		{`{"event_id":"a","event_id":"b","type":"click","ts":1763806530123,"ad_id":"a"}`, true},
		{`{` + req + `,"type":"view","type":"click"}`, true},
		{`{` + req + `,"type":"impression","type":"view"}`, true},
		{`{` + req + `,"country":"KR","country":null}`, true},
		{`{` + req + `,"event_id":""}`, true},
		// null is absent
		{`{"event_id":null,"type":"click","ts":1763806530123,"ad_id":"a"}`, true},
		{`{"event_id":"e","type":null,"ts":null,"ad_id":null}`, true},
		{`{` + req + `,"ip":null,"country":null,"ad_format":null,"device":null,"price_micros":null,"user_id":null}`, true},
		// integers: ids, leading zeros, beyond uint64 and int64
		{`{"event_id":"e","type":"click","ts":1763806530123,"ad_id":42,"campaign_id":0,"user_id":007}`, true},
		{`{` + req + `,"price_micros":18446744073709551615}`, true},
		{`{` + req + `,"price_micros":18446744073709551616}`, true},
		{`{` + req + `,"user_id":99999999999999999999999}`, true},
		{`{` + req + `,"price_micros":00000000000000000000000250000}`, true},
		{`{"event_id":"e","type":"click","ts":9223372036854775808,"ad_id":"a"}`, true},
		{`{"event_id":"e","type":"click","ts":0001763806530123,"ad_id":"a"}`, true},
		{`{"event_id":1,"type":"click","ts":1763806530123,"ad_id":"a"}`, true},
		{`{` + req + `,"price_micros":"100"}`, true},
		// ts as text and as a number, in and out of range
		{`{"event_id":"e","type":"click","ts":"2026-11-22T19:15:30.123456+09:00","ad_id":"a"}`, true},
		{`{"event_id":"e","type":"click","ts":"2026-11-22 19:15:30","ad_id":"a"}`, true},
		{`{"event_id":"e","type":"click","ts":"2100-01-01T00:00:00Z","ad_id":"a"}`, true},
		{`{"event_id":"e","type":"click","ts":1763806530,"ad_id":"a"}`, true},
		{`{"event_id":"e","type":"click","ts":"","ad_id":"a"}`, true},
		// unknown keys are ignored; nested values and literals fall back
		{`{` + req + `,"extra":"x","n":5,"z":null}`, true},
		{`{` + req + `,"extra":{"x":[1,2]}}`, false},
		{`{` + req + `,"extra":[]}`, false},
		{`{` + req + `,"flag":true}`, false},
		{`{` + req + `,"flag":false}`, false},
		// empty strings and missing fields
		{`{"event_id":"","type":"","ts":"","ad_id":""}`, true},
		{`{` + req + `,"ip":"","country":"","ad_format":"","device":"","user_id":"","campaign_id":""}`, true},
		{`{"":""}`, true},
		{`{"event_id":"e"}`, true},
		{`{"ts":1763806530123,"ad_id":"a"}`, true},
		{`{}`, false},
		// encoding: invalid UTF-8 in a value, in a key, raw control bytes
		{`{` + req + `,"user_id":"u-` + "\xff" + `"}`, true},
		{`{` + req + `,"x` + "\xff" + `":"y"}`, true},
		{`{` + req + `,"x":"` + "\xc3" + `"}`, true},
		{`{"event_id":"e` + "\t\x00\x1f" + `","type":"click","ts":1763806530123,"ad_id":"a"}`, true},
		{`{` + req + `,"user_id":"` + strings.Repeat("x", 129) + `"}`, true},
		{`{` + req + `,"user_id":"` + strings.Repeat("é", 64) + `"}`, true},
		// escapes fall back, wherever they are
		{`{"event_id":"e\u0031","type":"click","ts":1763806530123,"ad_id":"a"}`, false},
		{`{"event\u005fid":"e","type":"click","ts":1763806530123,"ad_id":"a"}`, false},
		{`{` + req + `,"user_id":"\"quoted\""}`, false},
		{`{` + req + `,"x":"\\"}`, false},
		// numbers outside the shape fall back
		{`{` + req + `,"price_micros":-1}`, false},
		{`{` + req + `,"price_micros":1.5}`, false},
		{`{` + req + `,"price_micros":1e3}`, false},
		{`{` + req + `,"price_micros":1E3}`, false},
		{`{` + req + `,"price_micros":1-2}`, false},
		{`{` + req + `,"price_micros":1+2}`, false},
		{`{` + req + `,"price_micros":NaN}`, false},
		{`{` + req + `,"price_micros":nan}`, false},
		{`{` + req + `,"price_micros":inf}`, false},
		// not JSON, or not one object
		{`{` + req + `,"type":"view","x":}`, false},
		{`{` + req + `,}`, false},
		{`{` + req + `}x`, false},
		{`{` + req + `}}`, false},
		{`{` + req + `} {}`, false},
		{`{` + req + `,"x":nul}`, false},
		{`{` + req + `,"x":nullx}`, false},
		{`{` + req + `,"x":1x}`, false},
		{`{` + req + `,"x" 1}`, false},
		{`{` + req + `,"x":"y}`, false},
		{`{` + req + ` "x":1}`, false},
		{`{` + req, false},
		{`{"event_id`, false},
		{`{"event_id":`, false},
		{`{"event_id":"e"`, false},
		{`{"event_id":"e",`, false},
		{"{\"event_id\":\"e\"\v}", false},
		{`[` + `{` + req + `}]`, false},
		{`"str"`, false},
		{`12`, false},
		{``, false},
		{` `, false},
	} {
		if took := compareScan(t, []byte(tc.in)); took != tc.took {
			t.Errorf("%q: scanner took it: %v, want %v", tc.in, took, tc.took)
		}
	}
}

// TestScanTakesGenerated: every event the generator makes, malformed ones
// included, has the common shape.
func TestScanTakesGenerated(t *testing.T) {
	src := generator.New(generator.Options{Seed: 7, BadShare: 0.3})
	var line []byte
	for range 2000 {
		line = src.AppendNext(line[:0])
		if !compareScan(t, line) {
			t.Fatalf("the scanner gave up on %s", line)
		}
	}
}

// TestEachMatchesFastjson: over NDJSON that mixes lines the scanner takes
// and lines it leaves to fastjson, Each gives what fastjson alone gives.
func TestEachMatchesFastjson(t *testing.T) {
	lines := []string{
		good,
		good[:strings.Index(good, `,"extra"`)] + "}",
		`{"event_id":"e2","type":"click","ts":1763806530123,"ad_id":"a","x":}`,
		`{"event_id":"e3","type":"view","ts":1763806530123,"ad_id":"a"}`,
		`{"event_id":"e4\u0031","type":"click","ts":1763806530123,"ad_id":"a"}`,
		`{"event_id":"e5","type":"click","ts":1763806530123,"ad_id":"a","n":-1}`,
		` {"event_id" : "e6", "type":"click","ts":1763806530123,"ad_id":"a"}` + "\r",
	}
	var d, slow Decoder
	i := 0
	err := d.Each([]byte(strings.Join(lines, "\n")), func(index int, raw []byte, ev *clickagg.Event, err error) error {
		line := []byte(strings.TrimSpace(lines[i]))
		if index != i || !bytes.Equal(raw, line) {
			t.Fatalf("event %d: index %d, raw %s", i, index, raw)
		}
		i++
		var sev clickagg.Event
		slow.utf8 = utf8.Valid(line)
		sfe := slow.parse(line, &sev)
		if (err == nil) != (sfe == nil) || err != nil && *err.(*clickagg.FieldError) != *sfe {
			t.Fatalf("%s: error %v, fastjson's %v", line, err, sfe)
		}
		// an event that is not JSON holds whatever was there before
		if (sfe == nil || sfe.Field != "") && *ev != sev {
			t.Fatalf("%s:\nEach     %+v\nfastjson %+v", line, *ev, sev)
		}
		return nil
	})
	if err != nil || i != len(lines) {
		t.Fatalf("%v after %d events", err, i)
	}
}

// FuzzFastPath: whenever the scanner takes a text, it decodes it exactly as
// fastjson does.
func FuzzFastPath(f *testing.F) {
	src := generator.New(generator.Options{Seed: 11, BadShare: 0.2, DuplicateShare: 0.1})
	for range 20 {
		f.Add(src.AppendNext(nil))
	}
	f.Add([]byte(good))
	f.Add([]byte(good[:strings.Index(good, `,"extra"`)] + "}"))
	f.Add([]byte(` {"event_id" : "e" , "type":"click","ts":1763806530123,"ad_id":42,"campaign_id":007,"x":null} `))
	f.Add([]byte(`{"event_id":"a","event_id":"","type":"view","type":"click","ts":"2026-11-22T19:15:30+09:00","ad_id":"a","price_micros":18446744073709551616}`))
	f.Add([]byte(`{"event_id":"e","type":"click","ts":1763806530123,"ad_id":"a","user_id":"` + "\xff" + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		compareScan(t, data)
		// and Decode, whichever path it takes, is fastjson's answer
		var d Decoder
		slow := Decoder{utf8: utf8.Valid(data)}
		ev, sev := stale, stale
		err := d.Decode(data, &ev)
		sfe := slow.parse(data, &sev)
		if ev != sev || (err == nil) != (sfe == nil) || err != nil && *err.(*clickagg.FieldError) != *sfe {
			t.Fatalf("%q: Decode gave %v %+v, fastjson %v %+v", data, err, ev, sfe, sev)
		}
	})
}
