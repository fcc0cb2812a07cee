package ingestor

import (
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/clickagg/clickagg"
)

// Rows holds events in columnar form, in the column layout of the events
// table. A collector fills one per request without locks; Add then merges it
// into the shared batch with a few memory copies. Rows copies every string it
// is given, so decoders may reuse their buffers.
type Rows struct {
	eventID, adID, campaignID, userID proto.ColStr
	typ, format, device               proto.ColInt8
	ts, received                      proto.ColDateTime
	tsMillis                          proto.ColUInt16
	ip, country                       proto.ColFixedStr
	price                             proto.ColUInt64
	duplicate                         proto.ColUInt8
	receivedAt                        proto.DateTime
}

// fixedRowBytes is the encoded size of a row's fixed-width columns plus one
// length byte per string; the estimate behind Options.MaxBytes.
const fixedRowBytes = 1 + 4 + 2 + 16 + 2 + 1 + 1 + 8 + 4 + 4 + 1

// enumType wraps an Int8 column with the exact Enum8 type of the table, so
// the Native block declares the same type the server has.
type enumType struct {
	*proto.ColInt8
	t proto.ColumnType
}

func (c enumType) Type() proto.ColumnType { return c.t }

// Columns lists the events table columns Rows fills, in block order.
var Columns = []string{"event_id", "type", "ts", "ts_millis", "ad_id", "campaign_id", "user_id", "ip", "country", "ad_format", "device", "price_micros", "received_at", "duplicate"}

func (r *Rows) input() proto.Input {
	r.ip.SetSize(16)
	r.country.SetSize(2)
	return proto.Input{
		{Name: "event_id", Data: &r.eventID},
		{Name: "type", Data: enumType{&r.typ, proto.ColumnType(clickagg.EventTypeSQL)}},
		{Name: "ts", Data: &r.ts},
		{Name: "ts_millis", Data: &r.tsMillis},
		{Name: "ad_id", Data: &r.adID},
		{Name: "campaign_id", Data: &r.campaignID},
		{Name: "user_id", Data: &r.userID},
		{Name: "ip", Data: &r.ip},
		{Name: "country", Data: &r.country},
		{Name: "ad_format", Data: enumType{&r.format, proto.ColumnType(clickagg.AdFormatSQL)}},
		{Name: "device", Data: enumType{&r.device, proto.ColumnType(clickagg.DeviceSQL)}},
		{Name: "price_micros", Data: &r.price},
		{Name: "received_at", Data: &r.received},
		{Name: "duplicate", Data: &r.duplicate},
	}
}

// EncodeNative appends the rows to buf as one Native-format block, the body
// of an `INSERT ... FORMAT Native`.
func (r *Rows) EncodeNative(buf *proto.Buffer) error {
	input := r.input()
	if err := (proto.Block{Columns: len(input), Rows: r.Len()}).EncodeRawBlock(buf, 0, input); err != nil {
		return fmt.Errorf("encode block: %w", err)
	}
	return nil
}

// SetReceived sets the receive time stamped on rows appended from now on.
func (r *Rows) SetReceived(t time.Time) { r.receivedAt = proto.DateTime(t.Unix()) }

// Append adds one event. A duplicate (an event_id accepted before) is
// stored for the record and left out of the aggregates.
func (r *Rows) Append(ev *clickagg.Event, duplicate bool) {
	var dup uint8
	if duplicate {
		dup = 1
	}
	r.duplicate.Append(dup)
	r.eventID.Append(ev.EventID)
	r.typ.Append(int8(ev.Type))
	r.ts.AppendRaw(proto.DateTime(ev.Time.Unix()))
	r.tsMillis.Append(uint16(ev.Time.Nanosecond() / 1e6))
	r.adID.Append(ev.AdID)
	r.campaignID.Append(ev.CampaignID)
	r.userID.Append(ev.UserID)
	r.ip.Buf = append(r.ip.Buf, ev.IP[:]...)
	r.country.Buf = append(r.country.Buf, ev.Country[:]...)
	r.format.Append(int8(ev.AdFormat))
	r.device.Append(int8(ev.Device))
	r.price.Append(ev.PriceMicros)
	r.received.AppendRaw(r.receivedAt)
}

// SetDuplicate marks row i as a duplicate after it was appended.
func (r *Rows) SetDuplicate(i int) { r.duplicate[i] = 1 }

// PastHours appends to dst the UTC hours holding non-duplicate rows whose
// minute had begun before now's minute: the late events of the rows.
func (r *Rows) PastHours(now time.Time, dst []time.Time) []time.Time {
	cur := proto.DateTime(now.Truncate(time.Minute).Unix())
	for i, ts := range r.ts.Data {
		if ts >= cur || r.duplicate[i] == 1 {
			continue
		}
		h := time.Unix(int64(ts), 0).UTC().Truncate(time.Hour)
		if !slices.ContainsFunc(dst, h.Equal) {
			dst = append(dst, h)
		}
	}
	return dst
}

// Len is the number of rows.
func (r *Rows) Len() int { return len(r.typ) }

// Bytes estimates the encoded size of the rows.
func (r *Rows) Bytes() int {
	return r.Len()*fixedRowBytes + len(r.eventID.Buf) + len(r.adID.Buf) + len(r.campaignID.Buf) + len(r.userID.Buf)
}

// capRows is how many rows r holds memory for, without growing.
func (r *Rows) capRows() int { return cap(r.typ) }

// Reset empties r, keeping its memory for reuse.
func (r *Rows) Reset() {
	for _, c := range []*proto.ColStr{&r.eventID, &r.adID, &r.campaignID, &r.userID} {
		c.Reset()
	}
	r.typ.Reset()
	r.format.Reset()
	r.device.Reset()
	r.ts.Reset()
	r.received.Reset()
	r.tsMillis.Reset()
	r.ip.Buf = r.ip.Buf[:0]
	r.country.Buf = r.country.Buf[:0]
	r.price.Reset()
	r.duplicate.Reset()
}

// AppendRows adds all rows of o.
func (r *Rows) AppendRows(o *Rows) {
	appendStr(&r.eventID, &o.eventID)
	appendStr(&r.adID, &o.adID)
	appendStr(&r.campaignID, &o.campaignID)
	appendStr(&r.userID, &o.userID)
	r.typ = append(r.typ, o.typ...)
	r.format = append(r.format, o.format...)
	r.device = append(r.device, o.device...)
	r.ts.Data = append(r.ts.Data, o.ts.Data...)
	r.received.Data = append(r.received.Data, o.received.Data...)
	r.tsMillis = append(r.tsMillis, o.tsMillis...)
	r.ip.Buf = append(r.ip.Buf, o.ip.Buf...)
	r.country.Buf = append(r.country.Buf, o.country.Buf...)
	r.price = append(r.price, o.price...)
	r.duplicate = append(r.duplicate, o.duplicate...)
}

// AppendRow adds row i of o.
func (r *Rows) AppendRow(o *Rows, i int) {
	r.eventID.Append(o.eventID.Row(i))
	r.adID.Append(o.adID.Row(i))
	r.campaignID.Append(o.campaignID.Row(i))
	r.userID.Append(o.userID.Row(i))
	r.typ = append(r.typ, o.typ[i])
	r.format = append(r.format, o.format[i])
	r.device = append(r.device, o.device[i])
	r.ts.Data = append(r.ts.Data, o.ts.Data[i])
	r.received.Data = append(r.received.Data, o.received.Data[i])
	r.tsMillis = append(r.tsMillis, o.tsMillis[i])
	r.ip.Buf = append(r.ip.Buf, o.ip.Buf[16*i:16*i+16]...)
	r.country.Buf = append(r.country.Buf, o.country.Buf[2*i:2*i+2]...)
	r.price = append(r.price, o.price[i])
	r.duplicate = append(r.duplicate, o.duplicate[i])
}

func appendStr(dst, src *proto.ColStr) {
	off := len(dst.Buf)
	dst.Buf = append(dst.Buf, src.Buf...)
	for _, p := range src.Pos {
		dst.Pos = append(dst.Pos, proto.Position{Start: p.Start + off, End: p.End + off})
	}
}

// EventID returns the event id of row i; the string aliases r's memory.
func (r *Rows) EventID(i int) string { return r.eventID.Row(i) }
