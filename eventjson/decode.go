// Package eventjson decodes ad events from JSON (NDJSON or a JSON array) into
// clickagg.Event values, checking every field. An event of the common flat
// shape is read by a scanner of its own (scan.go), anything else by fastjson;
// either way a reused Decoder does not allocate per event.
package eventjson

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"
	"github.com/valyala/fastjson/fastfloat"

	"github.com/clickagg/clickagg"
)

// Timestamps outside these bounds are taken for a unit mistake (seconds or
// microseconds sent as milliseconds) rather than real event times.
var (
	minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ErrBody is returned by Each when the body cannot be parsed at all.
var ErrBody = errors.New("unparsable body")

// Decoder decodes events. It is not safe for concurrent use; the strings of a
// decoded event alias the Decoder's memory or the text it was given, and are
// valid until the Decoder's next call while that text is unchanged.
type Decoder struct {
	p     fastjson.Parser
	seen  uint16 // bit set of the required fields seen in the current event
	field *clickagg.FieldError
	num   []byte // a number's text on the fastjson path
	// utf8 is set when the strings being checked are known to be valid
	// UTF-8, and need no check of their own: on the fastjson path when the
	// text is as a whole (fastjson's unescaping writes valid UTF-8), as one
	// pass over the line costs a fifth of one per string field; in scan
	// when the string is ASCII, which it finds while looking for its end.
	utf8 bool
}

// field bits of required fields
const (
	hasID uint16 = 1 << iota
	hasType
	hasTS
	hasAd
	hasAll = hasID | hasType | hasTS | hasAd
)

// Decode parses one JSON object into ev. A problem with a field is returned as
// a *clickagg.FieldError; invalid JSON as a FieldError with an empty Field.
func (d *Decoder) Decode(data []byte, ev *clickagg.Event) error {
	if fe := d.decode(data, ev); fe != nil {
		return fe
	}
	return nil
}

func (d *Decoder) decode(data []byte, ev *clickagg.Event) *clickagg.FieldError {
	if fe, ok := d.scan(data, ev); ok {
		return fe
	}
	d.utf8 = utf8.Valid(data) // after scan, which sets it for its own use
	return d.parse(data, ev)
}

// parse decodes data with fastjson: any JSON, and the oracle of scan's tests.
func (d *Decoder) parse(data []byte, ev *clickagg.Event) *clickagg.FieldError {
	v, err := d.p.ParseBytes(data)
	if err != nil {
		*ev = clickagg.Event{} // nothing of the previous event stays (its id would go with this line's dead letter)
		return &clickagg.FieldError{Message: "invalid JSON: " + err.Error()}
	}
	return d.decodeValue(v, ev)
}

// Each calls fn for every event of body, in order: a JSON array of objects,
// or newline-delimited objects (blank lines skipped). raw is the event's own
// text; ev and raw are only valid during the call. err is the event's
// problem, if any; an error returned by fn stops the walk and is returned.
// Each returns ErrBody (wrapped) when the body is empty or cannot be parsed.
func (d *Decoder) Each(body []byte, fn func(index int, raw []byte, ev *clickagg.Event, err error) error) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return fmt.Errorf("%w: empty", ErrBody)
	}
	var ev clickagg.Event
	if trimmed[0] == '[' {
		return d.eachArray(trimmed, &ev, fn)
	}
	index, good := 0, 0
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var err error
		if fe := d.decode(line, &ev); fe == nil || fe.Field != "" {
			good++
			if fe != nil {
				err = fe
			}
		} else {
			err = fe
		}
		if err := fn(index, line, &ev, err); err != nil {
			return err
		}
		index++
	}
	if good == 0 {
		return fmt.Errorf("%w: no line is a JSON object", ErrBody)
	}
	return nil
}

func (d *Decoder) eachArray(body []byte, ev *clickagg.Event, fn func(int, []byte, *clickagg.Event, error) error) error {
	d.utf8 = utf8.Valid(body)
	v, err := d.p.ParseBytes(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBody, err)
	}
	items, err := v.Array()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBody, err)
	}
	var raw []byte
	for i, item := range items {
		var err error
		if fe := d.decodeValue(item, ev); fe != nil {
			err = fe
			raw = item.MarshalTo(raw[:0]) // only rejected events need their text
		} else {
			raw = raw[:0]
		}
		if err := fn(i, raw, ev, err); err != nil {
			return err
		}
	}
	return nil
}

func (d *Decoder) decodeValue(v *fastjson.Value, ev *clickagg.Event) *clickagg.FieldError {
	*ev = clickagg.Event{Country: [2]byte{clickagg.UnknownCountry[0], clickagg.UnknownCountry[1]}}
	o, err := v.Object()
	if err != nil {
		return &clickagg.FieldError{Message: "event is not a JSON object"}
	}
	d.seen, d.field = 0, nil
	o.Visit(func(key []byte, v *fastjson.Value) {
		if d.field != nil {
			return
		}
		var b []byte
		t := v.Type()
		switch t {
		case fastjson.TypeNull:
			return
		case fastjson.TypeString:
			b, _ = v.StringBytes()
		case fastjson.TypeNumber:
			// A number's own text, which v.Int64 and v.Uint64 parse with
			// the same fastfloat functions visit uses.
			b = v.MarshalTo(d.num[:0])
			d.num = b
		}
		d.visit(key, t, b, ev)
	})
	return d.result()
}

// result is the event's problem once all its fields are visited: the first
// field that failed, else the first required field that is missing.
func (d *Decoder) result() *clickagg.FieldError {
	if d.field != nil {
		return d.field
	}
	if d.seen != hasAll {
		for _, f := range [...]struct {
			bit  uint16
			name string
		}{{hasID, "event_id"}, {hasType, "type"}, {hasTS, "ts"}, {hasAd, "ad_id"}} {
			if d.seen&f.bit == 0 {
				return &clickagg.FieldError{Field: f.name, Message: "required"}
			}
		}
	}
	return nil
}

func (d *Decoder) fail(field, msg string) {
	d.field = &clickagg.FieldError{Field: field, Message: msg}
}

// visit decodes one field whose value is not null, given its JSON type and,
// for a string, its unescaped bytes or, for a number, its text. Both the
// scanner and the fastjson path call it, so every rule is written here once.
// Unknown keys are ignored so senders may add fields.
func (d *Decoder) visit(key []byte, t fastjson.Type, b []byte, ev *clickagg.Event) {
	switch string(key) {
	case "event_id":
		if s, ok := d.str("event_id", t, b, true); ok {
			ev.EventID, d.seen = s, d.seen|hasID
		}
	case "type":
		if s, ok := d.str("type", t, b, false); ok {
			t, ok := clickagg.ParseEventType(s)
			if !ok {
				d.fail("type", "must be one of impression, click, conversion")
				return
			}
			ev.Type, d.seen = t, d.seen|hasType
		}
	case "ts":
		if t, ok := d.time(t, b); ok {
			ev.Time, d.seen = t, d.seen|hasTS
		}
	case "ad_id":
		if s, ok := d.id("ad_id", t, b); ok {
			ev.AdID, d.seen = s, d.seen|hasAd
		}
	case "campaign_id":
		ev.CampaignID, _ = d.id("campaign_id", t, b)
	case "user_id":
		ev.UserID, _ = d.id("user_id", t, b)
	case "ip":
		if s, ok := d.str("ip", t, b, false); ok {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				d.fail("ip", "must be an IPv4 or IPv6 address")
				return
			}
			ev.IP = a.As16()
		}
	case "country":
		if s, ok := d.str("country", t, b, false); ok {
			if !clickagg.ValidCountry(s) {
				d.fail("country", "must be an upper-case ISO 3166-1 alpha-2 code")
				return
			}
			ev.Country = [2]byte{s[0], s[1]}
		}
	case "ad_format":
		if s, ok := d.str("ad_format", t, b, false); ok {
			f, ok := clickagg.ParseAdFormat(s)
			if !ok {
				d.fail("ad_format", "must be one of banner, interstitial, native, rewarded_video, video")
				return
			}
			ev.AdFormat = f
		}
	case "device":
		if s, ok := d.str("device", t, b, false); ok {
			dv, ok := clickagg.ParseDevice(s)
			if !ok {
				d.fail("device", "must be one of ios, android, web, ctv, other")
				return
			}
			ev.Device = dv
		}
	case "price_micros":
		if t != fastjson.TypeNumber {
			d.fail("price_micros", "must be a non-negative integer")
			return
		}
		n, err := fastfloat.ParseUint64(bytesToString(b))
		if err != nil {
			d.fail("price_micros", "must be a non-negative integer")
			return
		}
		ev.PriceMicros = n
	}
}

// str returns a string field, checking type, length and encoding.
func (d *Decoder) str(field string, t fastjson.Type, b []byte, nonEmpty bool) (string, bool) {
	if t != fastjson.TypeString {
		d.fail(field, "must be a string")
		return "", false
	}
	switch {
	case nonEmpty && len(b) == 0:
		d.fail(field, "must not be empty")
		return "", false
	case len(b) > clickagg.MaxIDLen:
		d.fail(field, "longer than "+strconv.Itoa(clickagg.MaxIDLen)+" bytes")
		return "", false
	case !d.utf8 && !utf8.Valid(b):
		d.fail(field, "must be valid UTF-8")
		return "", false
	}
	return bytesToString(b), true
}

// id accepts a non-empty string or a non-negative integer (many ad servers
// use numeric ids); integers are kept as their decimal text.
func (d *Decoder) id(field string, t fastjson.Type, b []byte) (string, bool) {
	switch t {
	case fastjson.TypeNumber:
		n, err := fastfloat.ParseUint64(bytesToString(b))
		if err != nil {
			d.fail(field, "must be a string or a non-negative integer")
			return "", false
		}
		return strconv.FormatUint(n, 10), true
	case fastjson.TypeString:
		return d.str(field, t, b, true)
	}
	d.fail(field, "must be a string or a non-negative integer")
	return "", false
}

// time accepts RFC 3339 text with an optional fraction, or integer unix
// milliseconds; the result is truncated to milliseconds, in UTC.
func (d *Decoder) time(typ fastjson.Type, b []byte) (time.Time, bool) {
	var t time.Time
	switch typ {
	case fastjson.TypeNumber:
		ms, err := fastfloat.ParseInt64(bytesToString(b))
		if err != nil {
			d.fail("ts", "must be RFC 3339 text or integer unix milliseconds")
			return t, false
		}
		t = time.UnixMilli(ms).UTC()
	case fastjson.TypeString:
		var err error
		t, err = time.Parse(time.RFC3339Nano, bytesToString(b))
		if err != nil {
			d.fail("ts", "must be RFC 3339 text or integer unix milliseconds")
			return t, false
		}
		t = t.UTC().Truncate(time.Millisecond)
	default:
		d.fail("ts", "must be RFC 3339 text or integer unix milliseconds")
		return t, false
	}
	if t.Before(minTime) || !t.Before(maxTime) {
		d.fail("ts", "out of range (years 2000 to 2099; integers are milliseconds)")
		return t, false
	}
	return t, true
}
