package ingestor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/clickagg/clickagg"
)

// MaxRawBytes bounds the text kept of one dead letter.
const MaxRawBytes = 64 << 10

// DeadLetters holds refused events (or bodies) in the column layout of the
// dead_letters table. Like Rows, it copies what it is given.
type DeadLetters struct {
	received                 proto.ColDateTime
	source, reason           proto.ColInt8
	field, msg, eventID, raw proto.ColStr
}

// Append adds one refused event.
func (d *DeadLetters) Append(at time.Time, src clickagg.Source, reason clickagg.RejectReason, field, message, eventID string, raw []byte) {
	if len(raw) > MaxRawBytes {
		raw = raw[:MaxRawBytes]
	}
	d.received.AppendRaw(proto.DateTime(at.Unix()))
	d.source.Append(int8(src))
	d.reason.Append(int8(reason))
	d.field.Append(field)
	d.msg.Append(message)
	d.eventID.Append(eventID)
	d.raw.AppendBytes(raw)
}

// Len is the number of dead letters.
func (d *DeadLetters) Len() int { return len(d.reason) }

// Reset empties d, keeping its memory.
func (d *DeadLetters) Reset() {
	d.received.Reset()
	d.source.Reset()
	d.reason.Reset()
	for _, c := range []*proto.ColStr{&d.field, &d.msg, &d.eventID, &d.raw} {
		c.Reset()
	}
}

var deadLetterColumns = []string{"received_at", "source", "reason", "field", "message", "event_id", "raw"}

// InsertDeadLetters writes d to table (dead_letters, or a cluster node's
// dead_letters_local) in one INSERT,
// retrying temporary failures a few times. Dead letters are rare, so they
// skip the batching of events; the collector waits for them like for events,
// so that nothing refused silently disappears.
func InsertDeadLetters(ctx context.Context, t Transport, table string, d *DeadLetters) error {
	if d.Len() == 0 {
		return nil
	}
	in := proto.Input{
		{Name: "received_at", Data: &d.received},
		{Name: "source", Data: enumType{&d.source, "Enum8('http' = 1, 'kafka' = 2)"}},
		{Name: "reason", Data: enumType{&d.reason, proto.ColumnType(clickagg.RejectReasonSQL)}},
		{Name: "field", Data: &d.field},
		{Name: "message", Data: &d.msg},
		{Name: "event_id", Data: &d.eventID},
		{Name: "raw", Data: &d.raw},
	}
	var buf proto.Buffer
	if err := (proto.Block{Columns: len(in), Rows: d.Len()}).EncodeRawBlock(&buf, 0, in); err != nil {
		return fmt.Errorf("encode dead letters: %w", err)
	}
	query := "INSERT INTO " + table + " (" + strings.Join(deadLetterColumns, ", ") + ") FORMAT Native"
	var err error
	for attempt := range 3 {
		if err = t.Insert(ctx, query, buf.Buf); err == nil || !Temporary(err) {
			break
		}
		select {
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("insert dead letters: %w", ctx.Err())
		}
	}
	if err != nil {
		return fmt.Errorf("insert dead letters: %w", err)
	}
	return nil
}
