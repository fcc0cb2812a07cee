package ingestor_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"sync"
	"testing"

	"github.com/ClickHouse/ch-go/compress"

	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
)

// roundTripper answers 200 to every request, handing its body to read.
type roundTripper struct {
	read func(r *http.Request)
}

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.read(r)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

func fakeHTTP(t *testing.T, noCompression bool, read func(r *http.Request)) *ingestor.HTTP {
	t.Helper()
	h, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: "http://ch.test:8123", NoCompression: noCompression,
		Client: &http.Client{Transport: roundTripper{read}}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// block is n bytes that LZ4 compresses to about half: random runs and
// zero runs.
func block(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		if i%64 < 32 {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
	}
	return b
}

// TestInsertFrames: a compressed body is the block in LZ4 frames of at
// most 1 MiB, the same after the buffer is reused for a larger and then a
// smaller block; an uncompressed body is the block.
func TestInsertFrames(t *testing.T) {
	var body []byte
	read := func(r *http.Request) {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			t.Fatal(err)
		}
		if r.ContentLength != int64(len(body)) {
			t.Errorf("Content-Length %d, body %d bytes", r.ContentLength, len(body))
		}
	}
	h := fakeHTTP(t, false, read)
	for i, n := range []int{100, 3<<20 + 5, 1 << 20, 1000} {
		b := block(n, byte(i))
		if err := h.Insert(context.Background(), "INSERT INTO t FORMAT Native", b); err != nil {
			t.Fatal(err)
		}
		frames := 0
		for rest := body; len(rest) > 0; frames++ {
			size := int(uint32(rest[17]) | uint32(rest[18])<<8 | uint32(rest[19])<<16 | uint32(rest[20])<<24) // after the checksum and method: compressed size with its 9-byte header
			rest = rest[16+size:]
		}
		if want := (n + 1<<20 - 1) >> 20; frames != want {
			t.Errorf("%d bytes: %d frames, want %d", n, frames, want)
		}
		got := make([]byte, n+1)
		k, err := io.ReadFull(compress.NewReader(bytes.NewReader(body)), got)
		if k != n || !bytes.Equal(got[:n], b) {
			t.Errorf("%d bytes: decompressed %d bytes (%v), not the block", n, k, err)
		}
	}
	h = fakeHTTP(t, true, read)
	b := block(3<<20, 1)
	if err := h.Insert(context.Background(), "INSERT INTO t FORMAT Native", b); err != nil || !bytes.Equal(body, b) {
		t.Errorf("uncompressed: %d bytes (%v), not the block", len(body), err)
	}
}

// TestInsertReusesFrames: a compressed insert does not allocate a buffer of
// the block's size each time.
func TestInsertReusesFrames(t *testing.T) {
	var sent int64
	h := fakeHTTP(t, false, func(r *http.Request) { sent, _ = io.Copy(io.Discard, r.Body) })
	b := block(4<<20, 0)
	insert := func() {
		if err := h.Insert(context.Background(), "INSERT INTO t FORMAT Native", b); err != nil {
			t.Fatal(err)
		}
	}
	insert() // the pool's first buffer
	// MemStats counts the whole process's allocations: the least of a few
	// runs leaves out other tests' goroutines.
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 4 {
			insert()
		}
		runtime.ReadMemStats(&after)
		least = min(least, (after.TotalAlloc-before.TotalAlloc)/4)
	}
	if least > uint64(sent)/8 {
		t.Errorf("%d bytes allocated per insert of a %d-byte block (%d compressed)", least, len(b), sent)
	}
}

// TestInsertBodyEndsWithInsert: the Transport may keep reading a body after
// an early answer; once Insert returns, those reads fail rather than read
// bytes the caller (or the next insert) reuses.
func TestInsertBodyEndsWithInsert(t *testing.T) {
	for _, noComp := range []bool{false, true} {
		var bodies []io.ReadCloser
		h := fakeHTTP(t, noComp, func(r *http.Request) {
			again, err := r.GetBody()
			if err != nil {
				t.Fatal(err)
			}
			bodies = append(bodies, r.Body, again)
		})
		if err := h.Insert(context.Background(), "INSERT INTO t FORMAT Native", block(1000, 0)); err != nil {
			t.Fatal(err)
		}
		for i, b := range bodies {
			if n, err := b.Read(make([]byte, 10)); n != 0 || err == nil || err == io.EOF {
				t.Errorf("nocompression=%v body %d: read %d bytes (%v) after Insert returned", noComp, i, n, err)
			}
		}
	}
}

// TestInsertCompressedAndNot: both ways into a real server, in blocks of
// several LZ4 frames and smaller ones, through one transport each (its
// buffers reused).
func TestInsertCompressedAndNot(t *testing.T) {
	db := testenv.Migrated(t)
	for i, noComp := range []bool{false, true} {
		rec := &sizes{tr: transport(t, db, noComp)}
		in := ingestor.New(rec, ingestor.Options{})
		from := i * 60000
		for _, r := range [][2]int{{0, 30000}, {30000, 30100}, {30100, 60000}} {
			if err := in.Add(context.Background(), rowsOf(from+r[0], from+r[1])); err != nil {
				t.Fatal(err)
			}
		}
		if err := in.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		n := from + 60000
		want := fmt.Sprintf("%d\t%d\t%d", n, n, n*(n-1)/2)
		if got := testenv.QueryString(t, db, "SELECT count(), uniqExact(event_id), sum(price_micros) FROM events"); got != want {
			t.Errorf("nocompression=%v: events %s, want %s", noComp, got, want)
		}
		if rec.largest <= 1<<20 {
			t.Errorf("nocompression=%v: largest block %d bytes, one LZ4 frame", noComp, rec.largest)
		}
	}
}

// sizes is a Transport that remembers the largest block it passed on.
type sizes struct {
	tr      ingestor.Transport
	mu      sync.Mutex
	largest int
}

func (s *sizes) Insert(ctx context.Context, query string, block []byte) error {
	s.mu.Lock()
	s.largest = max(s.largest, len(block))
	s.mu.Unlock()
	return s.tr.Insert(ctx, query, block)
}
