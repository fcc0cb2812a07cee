package ingestor_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func transport(t *testing.T, db testenv.ClickHouseDB, noCompression bool) *ingestor.HTTP {
	t.Helper()
	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: db.HTTPURL, Database: db.Database, NoCompression: noCompression})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

var base = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// event i: ads a0..a9, one minute per 100 events, types cycling.
func event(i int) clickagg.Event {
	ev := clickagg.Event{
		EventID:     "ev-" + strconv.Itoa(i),
		Type:        clickagg.EventType(1 + i%3),
		Time:        base.Add(time.Duration(i) * 600 * time.Millisecond).Add(123 * time.Millisecond),
		AdID:        "a" + strconv.Itoa(i%10),
		CampaignID:  "c" + strconv.Itoa(i%2),
		UserID:      "u" + strconv.Itoa(i%7),
		Country:     [2]byte{'K', 'R'},
		AdFormat:    clickagg.FormatBanner,
		Device:      clickagg.DeviceIOS,
		PriceMicros: uint64(i),
	}
	ev.IP[10], ev.IP[11], ev.IP[12], ev.IP[15] = 0xff, 0xff, 10, byte(i)
	return ev
}

func rowsOf(from, to int) *ingestor.Rows {
	var r ingestor.Rows
	r.SetReceived(base)
	for i := from; i < to; i++ {
		ev := event(i)
		r.Append(&ev, false)
	}
	return &r
}

func TestInsertRoundTrip(t *testing.T) {
	for _, noComp := range []bool{false, true} {
		t.Run(fmt.Sprintf("nocompression=%v", noComp), func(t *testing.T) {
			db := testenv.Migrated(t)
			in := ingestor.New(transport(t, db, noComp), ingestor.Options{})
			if err := in.Add(context.Background(), rowsOf(0, 1000)); err != nil {
				t.Fatal(err)
			}
			if err := in.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := testenv.QueryString(t, db, "SELECT count(), uniqExact(event_id), sum(price_micros), min(ts), max(ts_millis), any(country), "+
				"any(IPv6NumToString(ip)), countIf(type = 'click'), any(ad_format), any(device), any(received_at) FROM events")
			want := "1000\t1000\t499500\t2026-11-22 10:00:00\t923\tKR\t::ffff:10.0.0.0\t333\tbanner\tios\t2026-11-22 10:00:00"
			if got != want {
				t.Errorf("events:\n got %s\nwant %s", got, want)
			}
			got = testenv.QueryString(t, db, "SELECT toString(minute), sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_minute GROUP BY minute ORDER BY minute LIMIT 2")
			// minute 0 holds events 0..99 (600 ms apart): 34 impressions, 33 clicks, 33 conversions
			if want := "2026-11-22 10:00:00\t34\t33\t33\t4950\n2026-11-22 10:01:00\t33\t34\t33\t14950"; got != want {
				t.Errorf("ad_stats_minute:\n got %s\nwant %s", got, want)
			}
			if got := testenv.QueryString(t, db, "SELECT sum(impressions + clicks + conversions), sum(spend_micros) FROM ad_stats_daily"); got != "1000\t499500" {
				t.Errorf("ad_stats_daily: %s", got)
			}
			if s := in.Stats(); s.CommittedRows != 1000 || s.BufferedRows != 0 || s.FailedRows != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// Close must flush what is buffered: Adds blocked on a block that would only
// be sent after an hour all return committed.
func TestCloseFlushesBuffered(t *testing.T) {
	db := testenv.Migrated(t)
	in := ingestor.New(transport(t, db, false), ingestor.Options{Linger: time.Hour, MaxRows: 1 << 20})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- in.Add(context.Background(), rowsOf(g*500, g*500+500))
		}()
	}
	for in.Stats().BufferedRows < 10000 {
		time.Sleep(5 * time.Millisecond)
	}
	if got := testenv.QueryString(t, db, "SELECT count() FROM events"); got != "0" {
		t.Fatalf("%s rows before Close; linger should hold them", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := in.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := testenv.QueryString(t, db, "SELECT count(), uniqExact(event_id) FROM events"); got != "10000\t10000" {
		t.Fatalf("after Close: %s", got)
	}
	if err := in.Add(context.Background(), rowsOf(0, 1)); !errors.Is(err, ingestor.ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
}

func TestGroupCommitSharesBlocks(t *testing.T) {
	db := testenv.Migrated(t)
	in := ingestor.New(transport(t, db, false), ingestor.Options{Linger: 50 * time.Millisecond})
	defer in.Close(context.Background())
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := in.Add(context.Background(), rowsOf(g*100, g*100+100)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s := in.Stats()
	if s.CommittedRows != 5000 || s.Blocks >= 50 {
		t.Errorf("50 concurrent Adds: %+v, want fewer blocks than Adds", s)
	}
	if got := testenv.QueryString(t, db, "SELECT count() FROM events"); got != "5000" {
		t.Errorf("count %s", got)
	}
}

func TestServerErrors(t *testing.T) {
	db := testenv.Migrated(t)
	tr := transport(t, db, false)
	in := ingestor.New(tr, ingestor.Options{Table: "no_such_table", MaxRetries: -1})
	defer in.Close(context.Background())
	err := in.Add(context.Background(), rowsOf(0, 10))
	var se *ingestor.ServerError
	if !errors.As(err, &se) || se.Code != proto.ErrUnknownTable || ingestor.Temporary(err) {
		t.Fatalf("unknown table: %v (code %v), want UNKNOWN_TABLE, not temporary", err, se)
	}

	// Nothing listens on a just-closed port: a temporary network error,
	// retried MaxRetries times.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	dead, _ := ingestor.NewHTTP(ingestor.HTTPOptions{URL: "http://" + addr})
	in2 := ingestor.New(dead, ingestor.Options{MaxRetries: 2, Backoff: time.Millisecond})
	defer in2.Close(context.Background())
	err = in2.Add(context.Background(), rowsOf(0, 10))
	var ne *ingestor.NetError
	if !errors.As(err, &ne) || !ingestor.Temporary(err) {
		t.Fatalf("dead server: %v", err)
	}
	if s := in2.Stats(); s.Retries != 2 || s.FailedRows != 10 || s.BufferedRows != 0 {
		t.Errorf("stats %+v", s)
	}
}

// blocking is a Transport that holds every insert until released.
type blocking struct {
	release chan struct{}
	calls   atomic.Int64
	fail    atomic.Int64 // fail this many calls with a temporary error first
}

func (b *blocking) Insert(ctx context.Context, _ string, _ []byte) error {
	b.calls.Add(1)
	if b.fail.Add(-1) >= 0 {
		return &ingestor.NetError{Err: errors.New("injected")}
	}
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestBufferFull(t *testing.T) {
	tr := &blocking{release: make(chan struct{})}
	in := ingestor.New(tr, ingestor.Options{MaxBufferedRows: 100, MaxRows: 10, Linger: time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- in.Add(context.Background(), rowsOf(0, 100)) }()
	for in.Stats().BufferedRows < 100 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := in.Add(ctx, rowsOf(100, 101)); !errors.Is(err, ingestor.ErrBufferFull) || !ingestor.Temporary(err) {
		t.Fatalf("Add on a full buffer: %v", err)
	}
	if err := in.Add(context.Background(), rowsOf(0, 101)); !errors.Is(err, ingestor.ErrTooLarge) {
		t.Fatalf("Add larger than the buffer: %v", err)
	}
	close(tr.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRetriesThenCommits(t *testing.T) {
	tr := &blocking{release: make(chan struct{})}
	close(tr.release)
	tr.fail.Store(3)
	in := ingestor.New(tr, ingestor.Options{MaxRetries: 3, Backoff: time.Millisecond})
	if err := in.Add(context.Background(), rowsOf(0, 5)); err != nil {
		t.Fatal(err)
	}
	in.Close(context.Background())
	if s := in.Stats(); s.Retries != 3 || s.CommittedRows != 5 || tr.calls.Load() != 4 {
		t.Errorf("stats %+v calls %d", s, tr.calls.Load())
	}
}

// Close with a ctx that ends while an insert hangs cancels it: the waiter
// gets an error, never a false acknowledgement.
func TestCloseTimeoutFailsWaiters(t *testing.T) {
	tr := &blocking{release: make(chan struct{})}
	in := ingestor.New(tr, ingestor.Options{MaxRetries: -1})
	done := make(chan error, 1)
	go func() { done <- in.Add(context.Background(), rowsOf(0, 5)) }()
	for tr.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := in.Close(ctx); err == nil {
		t.Fatal("Close returned nil with an insert hanging")
	}
	if err := <-done; err == nil {
		t.Fatal("Add acknowledged rows that were never committed")
	}
}

// lossy delivers the first block but reports the answer lost, like a
// connection reset after the server took the INSERT; or, with dropFirst,
// loses the first block before the server sees it.
type lossy struct {
	*ingestor.HTTP
	dropFirst bool
	calls     atomic.Int64
}

func (l *lossy) Insert(ctx context.Context, q string, block []byte) error {
	if l.calls.Add(1) == 1 {
		if !l.dropFirst {
			if err := l.HTTP.Insert(ctx, q, block); err != nil {
				return err
			}
		}
		return &ingestor.NetError{Err: errors.New("connection reset by peer")}
	}
	return l.HTTP.Insert(ctx, q, block)
}

// A block whose answer was lost is probed before a retry: found, it is not
// inserted again; not found, it is.
func TestLostAnswerNotInsertedTwice(t *testing.T) {
	for _, dropFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("dropFirst=%v", dropFirst), func(t *testing.T) {
			db := testenv.Migrated(t)
			tr := &lossy{HTTP: transport(t, db, false), dropFirst: dropFirst}
			in := ingestor.New(tr, ingestor.Options{Backoff: time.Millisecond})
			rows := rowsOf(0, 500)
			rows.SetDuplicate(0) // the probe must skip duplicate rows
			if err := in.Add(context.Background(), rows); err != nil {
				t.Fatal(err)
			}
			in.Close(context.Background())
			if got := testenv.QueryString(t, db, "SELECT count(), uniqExact(event_id) FROM events"); got != "500\t500" {
				t.Fatalf("events: %s", got)
			}
			st := in.Stats()
			wantRecovered, wantCalls := int64(1), int64(1)
			if dropFirst {
				wantRecovered, wantCalls = 0, 2
			}
			if st.Recovered != wantRecovered || tr.calls.Load() != wantCalls || st.CommittedRows != 500 {
				t.Errorf("stats %+v, insert calls %d", st, tr.calls.Load())
			}
		})
	}
}
