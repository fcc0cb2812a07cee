package ingestor_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/clickagg/clickagg/ingestor"
)

// A replica that reads a block and closes the connection without an answer
// (a server stopping after its commit) and a replica that refuses the dial:
// the block may be in the shard, so the failure must be uncertain, not a
// plain one whose events a client would resend as new.
func TestFailoverKeepsLostAnswer(t *testing.T) {
	taker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taker.Close() })
	go func() {
		for {
			c, err := taker.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.Copy(io.Discard, req.Body)
				}
			}()
		}
	}()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()

	f, err := ingestor.NewFailover([]string{"http://" + taker.Addr().String(), "http://" + gone.Addr().String()}, ingestor.HTTPOptions{Database: "default"})
	if err != nil {
		t.Fatal(err)
	}
	in := ingestor.New(f, ingestor.Options{Deduplicated: true, MaxRetries: 1, Backoff: time.Millisecond})
	defer in.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := in.Enqueue(ctx, rowsOf(0, 10))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Wait()
	var u *ingestor.UncertainError
	if !errors.As(err, &u) {
		t.Fatalf("got %v, want an UncertainError", err)
	}
}
