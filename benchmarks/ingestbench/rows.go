package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/eventjson"
)

// eachEvent decodes the corpus line by line and hands each event to fn.
func eachEvent(lines [][]byte, fn func(i int, ev *clickagg.Event) error) error {
	var dec eventjson.Decoder
	var ev clickagg.Event
	for i, l := range lines {
		if err := dec.Decode(l, &ev); err != nil {
			return fmt.Errorf("corpus line %d: %w", i+1, err)
		}
		if err := fn(i, &ev); err != nil {
			return err
		}
	}
	return nil
}

// tableRows converts the corpus to the events table's own columns, one
// JSONEachRow object a line, for the loader and for direct HTTP inserts
// (ClickHouse cannot map the API's JSON). The ip column is left out: JSON
// cannot carry its 16 raw bytes.
func tableRows(lines [][]byte) ([][]byte, error) {
	rows := make([][]byte, len(lines))
	now := time.Now().UTC().Format(time.DateTime)
	err := eachEvent(lines, func(i int, ev *clickagg.Event) error {
		row := loaderRow{ev.EventID, ev.Type.String(), ev.Time.UTC().Format(time.DateTime), uint16(ev.Time.Nanosecond() / 1e6),
			ev.AdID, ev.CampaignID, ev.UserID, string(ev.Country[:]), ev.AdFormat.String(), ev.Device.String(), ev.PriceMicros, now, 0}
		b, err := json.Marshal(&row)
		rows[i] = b
		return err
	})
	return rows, err
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

// loader times clickhouse-client loading the rows from a file, as one
// INSERT.
func loader(rows [][]byte, command string) (result, error) {
	path, err := writeRows(rows)
	if err != nil {
		return result{}, fmt.Errorf("loader file: %w", err)
	}
	defer os.Remove(path)
	in, err := os.Open(path)
	if err != nil {
		return result{}, fmt.Errorf("loader file: %w", err)
	}
	defer in.Close()
	args := append(strings.Fields(command), "--query", "INSERT INTO events FORMAT JSONEachRow")
	cmd := exec.CommandContext(context.Background(), args[0], args[1:]...)
	cmd.Stdin, cmd.Stderr = in, os.Stderr
	r := result{events: len(rows)}
	t := startTimer()
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	t.stop(&r)
	fmt.Println(r.line("loader", "clickhouse-client JSONEachRow"))
	return r, nil
}

// writeRows writes the rows, one a line, to a new temporary file.
func writeRows(rows [][]byte) (string, error) {
	f, err := os.CreateTemp("", "ingestbench-*.json")
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, row := range rows {
		w.Write(row)
		w.WriteByte('\n')
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// columns is the corpus as the events table's columns, for clickhouse-go.
type columns struct {
	ids, types, ads, camps, users, countries, fmts, devs []string
	ts, received                                         []time.Time
	millis                                               []uint16
	ips                                                  [][]byte
	prices                                               []uint64
	dups                                                 []uint8
}

func toColumns(lines [][]byte) (*columns, error) {
	var c columns
	now := time.Now().UTC().Truncate(time.Second)
	err := eachEvent(lines, func(_ int, ev *clickagg.Event) error {
		// The event's strings and IP are the decoder's until the next line.
		ip := ev.IP
		c.ids, c.types, c.ads, c.camps, c.users = append(c.ids, strings.Clone(ev.EventID)), append(c.types, ev.Type.String()), append(c.ads, strings.Clone(ev.AdID)), append(c.camps, strings.Clone(ev.CampaignID)), append(c.users, strings.Clone(ev.UserID))
		c.countries, c.fmts, c.devs = append(c.countries, string(ev.Country[:])), append(c.fmts, ev.AdFormat.String()), append(c.devs, ev.Device.String())
		c.ts, c.millis, c.received = append(c.ts, ev.Time.Truncate(time.Second)), append(c.millis, uint16(ev.Time.Nanosecond()/1e6)), append(c.received, now)
		c.ips, c.prices, c.dups = append(c.ips, ip[:]), append(c.prices, ev.PriceMicros), append(c.dups, 0)
		return nil
	})
	return &c, err
}

// slice is rows lo to hi of every column, in the INSERT's order.
func (c *columns) slice(lo, hi int) []any {
	return []any{c.ids[lo:hi], c.types[lo:hi], c.ts[lo:hi], c.millis[lo:hi], c.ads[lo:hi], c.camps[lo:hi], c.users[lo:hi], c.ips[lo:hi],
		c.countries[lo:hi], c.fmts[lo:hi], c.devs[lo:hi], c.prices[lo:hi], c.received[lo:hi], c.dups[lo:hi]}
}

// goBatches times a plain clickhouse-go/v2 columnar insert of the corpus in
// batches of size rows, one after another. The JSON is decoded into columns
// before the clock starts, as a client holding structs would have them.
// (18.16 needs the INSERT to name its columns; PLATFORM.md.)
func goBatches(lines [][]byte, o chclient.Options, size int) (result, error) {
	ctx := context.Background()
	conn, err := chclient.OpenNative(ctx, o)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	cols, err := toColumns(lines)
	if err != nil {
		return result{}, err
	}
	const insert = "INSERT INTO events (event_id, type, ts, ts_millis, ad_id, campaign_id, user_id, ip, country, ad_format, device, price_micros, received_at, duplicate)"
	r := result{events: len(lines)}
	t := startTimer()
	for lo := 0; lo < len(lines); lo += size {
		b, err := conn.PrepareBatch(ctx, insert)
		if err != nil {
			return r, fmt.Errorf("prepare batch: %w", err)
		}
		for i, c := range cols.slice(lo, min(lo+size, len(lines))) {
			if err := b.Column(i).Append(c); err != nil {
				return r, fmt.Errorf("append column %d: %w", i, err)
			}
		}
		if err := b.Send(); err != nil {
			return r, fmt.Errorf("send batch: %w", err)
		}
	}
	t.stop(&r)
	fmt.Println(r.line("go", fmt.Sprintf("clickhouse-go/v2 batches of %d rows", size)))
	return r, nil
}
