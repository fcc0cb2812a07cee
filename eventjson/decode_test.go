package eventjson

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
)

const good = `{"event_id":"e1","type":"click","ts":"2026-11-22T10:15:30.123456Z","ad_id":"ad-1","campaign_id":"c-9","user_id":"u-5","ip":"203.0.113.7","country":"KR","ad_format":"rewarded_video","device":"ios","price_micros":250000,"extra":{"x":[1,2]}}`

func TestDecodeGood(t *testing.T) {
	var d Decoder
	var ev clickagg.Event
	if err := d.Decode([]byte(good), &ev); err != nil {
		t.Fatal(err)
	}
	want := clickagg.Event{
		EventID: "e1", Type: clickagg.Click,
		Time: time.Date(2026, 11, 22, 10, 15, 30, 123e6, time.UTC),
		AdID: "ad-1", CampaignID: "c-9", UserID: "u-5",
		Country: [2]byte{'K', 'R'}, AdFormat: clickagg.FormatRewardedVideo, Device: clickagg.DeviceIOS,
		PriceMicros: 250000,
	}
	want.IP[10], want.IP[11] = 0xff, 0xff
	want.IP[12], want.IP[13], want.IP[14], want.IP[15] = 203, 0, 113, 7
	if ev != want {
		t.Fatalf("got  %+v\nwant %+v", ev, want)
	}
}

func TestDecodeDefaultsAndForms(t *testing.T) {
	var d Decoder
	var ev clickagg.Event
	in := `{"event_id":"e2","type":"impression","ts":1763806530123,"ad_id":42,"ip":"2001:db8::1","country":null,"campaign_id":7}`
	if err := d.Decode([]byte(in), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.AdID != "42" || ev.CampaignID != "7" {
		t.Errorf("numeric ids: ad %q campaign %q", ev.AdID, ev.CampaignID)
	}
	if !ev.Time.Equal(time.UnixMilli(1763806530123)) || ev.Time.Location() != time.UTC {
		t.Errorf("ts = %v", ev.Time)
	}
	if string(ev.Country[:]) != clickagg.UnknownCountry || ev.AdFormat != clickagg.FormatUnknown || ev.Device != clickagg.DeviceUnknown {
		t.Errorf("defaults: %+v", ev)
	}
	if ev.IP[0] != 0x20 || ev.IP[1] != 0x01 || ev.IP[15] != 1 {
		t.Errorf("ipv6: %v", ev.IP)
	}
	if err := d.Decode([]byte(`{"event_id":"e3","type":"conversion","ts":"2026-11-22T19:15:30+09:00","ad_id":"a"}`), &ev); err != nil {
		t.Fatal(err)
	}
	if !ev.Time.Equal(time.Date(2026, 11, 22, 10, 15, 30, 0, time.UTC)) || ev.Time.Location() != time.UTC {
		t.Errorf("offset ts = %v", ev.Time)
	}
}

func TestDecodeErrors(t *testing.T) {
	base := func(kv string) string {
		return `{"event_id":"e1","type":"click","ts":"2026-11-22T10:15:30Z","ad_id":"a1",` + kv + `}`
	}
	for _, tc := range []struct{ in, field string }{
		{`not json`, ""},
		{`[1]`, ""},
		{`"str"`, ""},
		{`{"type":"click","ts":1763806530123,"ad_id":"a"}`, "event_id"},
		{`{"event_id":"e","ts":1763806530123,"ad_id":"a"}`, "type"},
		{`{"event_id":"e","type":"click","ad_id":"a"}`, "ts"},
		{`{"event_id":"e","type":"click","ts":1763806530123}`, "ad_id"},
		{`{"event_id":"","type":"click","ts":1763806530123,"ad_id":"a"}`, "event_id"},
		{`{"event_id":5,"type":"click","ts":1763806530123,"ad_id":"a"}`, "event_id"},
		{`{"event_id":"e","type":"view","ts":1763806530123,"ad_id":"a"}`, "type"},
		{`{"event_id":"e","type":"click","ts":"yesterday","ad_id":"a"}`, "ts"},
		{`{"event_id":"e","type":"click","ts":1763806530,"ad_id":"a"}`, "ts"},
		{`{"event_id":"e","type":"click","ts":1.5,"ad_id":"a"}`, "ts"},
		{`{"event_id":"e","type":"click","ts":true,"ad_id":"a"}`, "ts"},
		{`{"event_id":"e","type":"click","ts":1763806530123,"ad_id":""}`, "ad_id"},
		{`{"event_id":"e","type":"click","ts":1763806530123,"ad_id":-3}`, "ad_id"},
		{`{"event_id":"e","type":"click","ts":1763806530123,"ad_id":{}}`, "ad_id"},
		{base(`"ip":"300.1.1.1"`), "ip"},
		{base(`"ip":"fe80::1%eth0"`), "ip"},
		{base(`"country":"us"`), "country"},
		{base(`"country":"USA"`), "country"},
		{base(`"country":"QQ"`), "country"},
		{base(`"ad_format":"popup"`), "ad_format"},
		{base(`"ad_format":"unknown"`), "ad_format"},
		{base(`"device":"fridge"`), "device"},
		{base(`"price_micros":-1`), "price_micros"},
		{base(`"price_micros":1.5`), "price_micros"},
		{base(`"price_micros":"100"`), "price_micros"},
		{base(`"price_micros":1e400`), "price_micros"},
		{base(`"user_id":"` + strings.Repeat("x", 200) + `"`), "user_id"},
		{base(`"user_id":"` + "\xff" + `"`), "user_id"},
	} {
		var d Decoder
		var ev clickagg.Event
		err := d.Decode([]byte(tc.in), &ev)
		var fe *clickagg.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s: err = %v, want a FieldError", tc.in, err)
			continue
		}
		if fe.Field != tc.field || fe.Message == "" {
			t.Errorf("%.60s: field %q (%s), want %q", tc.in, fe.Field, fe.Message, tc.field)
		}
	}
}

func TestEach(t *testing.T) {
	type got struct {
		index int
		id    string
		field string
		raw   string
	}
	collect := func(body string) ([]got, error) {
		var d Decoder
		var out []got
		err := d.Each([]byte(body), func(i int, raw []byte, ev *clickagg.Event, err error) error {
			g := got{index: i, id: strings.Clone(ev.EventID), raw: string(raw)}
			if err != nil {
				g.field = "!" + err.(*clickagg.FieldError).Field
			}
			out = append(out, g)
			return nil
		})
		return out, err
	}
	nd := good + "\n\n" + `{"event_id":"x"}` + "\r\n" + strings.Replace(good, `"e1"`, `"e2"`, 1) + "\n"
	out, err := collect(nd)
	if err != nil || len(out) != 3 || out[0].id != "e1" || out[1].field != "!type" || out[2].id != "e2" || out[1].raw != `{"event_id":"x"}` {
		t.Fatalf("ndjson: %v %+v", err, out)
	}
	out, err = collect(" [" + good + `, {"event_id":"y"}, 3]`)
	if err != nil || len(out) != 3 || out[0].id != "e1" || out[1].field != "!type" || out[2].field != "!" || out[1].raw != `{"event_id":"y"}` {
		t.Fatalf("array: %v %+v", err, out)
	}
	for _, body := range []string{"", "  \n", "[1,", "garbage\nmore garbage", "[{]"} {
		if _, err := collect(body); !errors.Is(err, ErrBody) {
			t.Errorf("body %q: err = %v, want ErrBody", body, err)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	// good goes through fastjson (its "extra" is nested), the other through scan
	for _, line := range [][]byte{[]byte(good), generated(1)} {
		var d Decoder
		var ev clickagg.Event
		allocs := testing.AllocsPerRun(100, func() {
			if err := d.Decode(line, &ev); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per event, want 0", line, allocs)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"event_id":"e","type":"click","ts":1763806530123,"ad_id":7,"ip":"::1"}`))
	f.Add([]byte(`[{"event_id":"e"},{}]`))
	f.Add([]byte("{}\n{\"ts\":\"2026-01-01T00:00:00.5+01:00\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Decoder
		_ = d.Each(data, func(i int, raw []byte, ev *clickagg.Event, err error) error {
			if err == nil {
				if ev.EventID == "" || ev.AdID == "" || ev.Type < clickagg.Impression || ev.Type > clickagg.Conversion {
					t.Fatalf("accepted an invalid event: %+v", ev)
				}
				if !clickagg.ValidCountry(string(ev.Country[:])) {
					t.Fatalf("accepted country %q", ev.Country)
				}
			}
			return nil
		})
	})
}

// A line that is not a JSON object leaves nothing of the event before it:
// its dead letter gets no event id.
func TestNotJSONForgetsPreviousEvent(t *testing.T) {
	var d Decoder
	body := good + "\nnot json\n[1]\n"
	err := d.Each([]byte(body), func(i int, _ []byte, ev *clickagg.Event, err error) error {
		if i > 0 && (err == nil || ev.EventID != "") {
			t.Errorf("line %d: event id %q, error %v; want none and an error", i, ev.EventID, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
