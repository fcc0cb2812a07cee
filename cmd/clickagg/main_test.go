package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/schema"
	"github.com/clickagg/clickagg/services"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func clickagg(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

// TestLocalWorkflow is `make run` in small: services up in a project-local
// dir, then every command finds them with no address flags.
func TestLocalWorkflow(t *testing.T) {
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		testenv.Must(t, err)
	}
	dir := t.TempDir()
	// The CLI prefers the default ports and takes free ones when they are
	// busy (a developer's own services), so the test reads what it chose.
	o := services.Options{Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv("CLICKAGG_DATA_DIR", dir)
	if _, errs, code := clickagg(t, ctx, "services", "up", "--no-install"); code != 0 {
		t.Fatalf("services up: %d %s", code, errs)
	}
	t.Cleanup(func() { services.Down(context.Background(), o) })

	st, err := services.Read(o)
	if err != nil {
		t.Fatal(err)
	}
	out, _, code := clickagg(t, ctx, "services", "status")
	if code != 0 || !strings.Contains(out, "CLICKAGG_CLICKHOUSE_HTTP="+st.ClickHouseHTTP+"\n") ||
		!strings.Contains(out, "CLICKAGG_CLICKHOUSE_UP=true") || !strings.Contains(out, "CLICKAGG_REDIS_UP=true") {
		t.Fatalf("status: %s", out)
	}
	latest, err := schema.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if out, errs, code := clickagg(t, ctx, "migrate", "up"); code != 0 || !strings.Contains(out, fmt.Sprintf("version=%d latest=%[1]d dirty=false", latest)) {
		t.Fatalf("migrate up: %d %s %s", code, out, errs)
	}
	if _, errs, code := clickagg(t, ctx, "migrate", "down"); code == 0 || !strings.Contains(errs, "--yes") {
		t.Fatalf("down without --yes must refuse: %d %s", code, errs)
	}

	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	sctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(sctx, []string{"serve", "--listen", listen, "--linger", "10ms"}, &bytes.Buffer{}, &serveErr)
	}()
	var resp *http.Response
	for range 100 {
		var err error
		resp, err = http.Get("http://" + listen + "/readyz")
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v; serve said %s", resp, serveErr.String())
	}
	resp.Body.Close()
	// generate finds the collector on the default --listen from the env.
	t.Setenv("CLICKAGG_LISTEN", listen)
	out, errs, code := clickagg(t, ctx, "generate", "--rate", "2000", "--duration", "1s", "--duplicate-share", "0")
	if code != 0 || !strings.Contains(out, "failed 0") {
		t.Fatalf("generate: %d %s %s", code, out, errs)
	}
	resp, err = http.Get("http://" + listen + "/v1/ingest/status")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ingest status: %v %v", resp, err)
	}
	var status struct {
		Collector struct{ Accepted int64 }
		Ingestor  struct {
			CommittedRows int64 `json:"committed_rows"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if status.Collector.Accepted == 0 || status.Collector.Accepted != status.Ingestor.CommittedRows {
		t.Errorf("ingest status %+v", status)
	}
	// The scheduled reconciliation ran at start and found the aggregates
	// equal to the raw events.
	var recon struct {
		Enabled bool
		Last    *struct {
			Fixed  bool
			Err    string
			Tables []struct{ Rows int64 }
		}
	}
	for range 100 {
		resp, err = http.Get("http://" + listen + "/v1/reconcile/status")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&recon)
		resp.Body.Close()
		if recon.Last != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !recon.Enabled || recon.Last == nil || recon.Last.Err != "" || len(recon.Last.Tables) == 0 {
		t.Errorf("reconcile status %+v", recon)
	}
	stop() // as SIGTERM does: drain, flush, exit 0
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d: %s", code, serveErr.String())
	}
	n, err := services.Query(ctx, st.ClickHouseHTTP, st.Database, "SELECT count() FROM events")
	if err != nil || strings.TrimSpace(n) == "0" {
		t.Fatalf("events after generate: %q %v", n, err)
	}
	var accepted string
	for _, f := range strings.Split(out, ",") {
		if strings.Contains(f, "accepted") {
			accepted = strings.Fields(f)[1]
		}
	}
	if strings.TrimSpace(n) != accepted {
		t.Errorf("%s events in ClickHouse, generator saw %s accepted (%s)", strings.TrimSpace(n), accepted, out)
	}
	if _, errs, code := clickagg(t, ctx, "migrate", "down", "--yes"); code != 0 {
		t.Fatalf("migrate down: %s", errs)
	}
	if _, errs, code := clickagg(t, ctx, "services", "down"); code != 0 {
		t.Fatalf("services down: %s", errs)
	}
	if st, _ := services.Read(o); st.ClickHouseUp || st.RedisUp {
		t.Fatalf("still up after down: %+v", st)
	}
}

func TestHelpAndUsage(t *testing.T) {
	ctx := context.Background()
	if out, _, code := clickagg(t, ctx, "--help"); code != 0 || !strings.Contains(out, "services") {
		t.Errorf("--help: %d %s", code, out)
	}
	for _, cmd := range []string{"serve", "migrate", "generate", "services"} {
		if _, errs, code := clickagg(t, ctx, cmd, "--help"); code != 0 || !strings.Contains(errs, "CLICKAGG_") {
			t.Errorf("%s --help: %d %s", cmd, code, errs)
		}
	}
	if _, _, code := clickagg(t, ctx, "nope"); code != 2 {
		t.Errorf("unknown command exit %d", code)
	}
	if _, _, code := clickagg(t, ctx, "services", "sideways"); code != 2 {
		t.Errorf("unknown subcommand exit %d", code)
	}
}
