package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

// TestServeAuth runs serve with tokens on both sides against real servers:
// its own generator sends with the first ingest token, a request without
// one is refused with 401 and counted, and each side's token opens only
// its own routes.
func TestServeAuth(t *testing.T) {
	db := testenv.Migrated(t)
	r := testenv.Redis(t)
	t.Setenv("CLICKAGG_INGEST_TOKENS", "ingest-token-1,ingest-token-2")
	t.Setenv("CLICKAGG_QUERY_TOKENS", "query-token-1")
	listen := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--listen", listen, "--linger", "10ms", "--no-reconcile", "--kafka-verify-every", "0",
			"--clickhouse-http", db.HTTPURL, "--clickhouse-native", db.NativeAddr, "--clickhouse-database", db.Database,
			"--redis-addr", r.Addr(), "--generate-rate", "1000", "--generate-duration", "1s"}, io.Discard, &serveErr)
	}()
	call := func(method, path, token string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+listen+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := call("GET", "/readyz", "", ""); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", serveErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	event := `{"event_id":"auth-1","type":"click","ts":"` + time.Now().UTC().Format(time.RFC3339) + `","ad_id":"a1","campaign_id":"c1","user_id":"u1","country":"KR","ad_format":"banner","device":"ios"}`
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"POST", "/v1/events", "", 401},
		{"POST", "/v1/events", "query-token-1", 401},
		{"POST", "/v1/events", "ingest-token-2", 200},
		{"GET", "/v1/ingest/status", "ingest-token-1", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/healthz", "", 200},
	} {
		if code, body := call(tc.method, tc.path, tc.token, event); code != tc.want {
			t.Errorf("%s %s with %q: %d %s, want %d", tc.method, tc.path, tc.token, code, body, tc.want)
		}
	}
	// The built-in generator authenticates with the first ingest token: its
	// batches (100 events each at this rate) are accepted, and the only
	// 401s are the two above (/metrics below). How many batches a second
	// of generation makes depends on the machine's load: not asserted.
	var status struct{ Collector struct{ Accepted int64 } }
	for {
		code, body := call("GET", "/v1/ingest/status", "query-token-1", "")
		if code != 200 {
			t.Fatalf("status with the query token: %d %s", code, body)
		}
		json.Unmarshal([]byte(body), &status)
		if status.Collector.Accepted > 100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status.Collector.Accepted <= 100 {
		t.Errorf("generator's events accepted: %d", status.Collector.Accepted)
	}
	code, metrics := call("GET", "/metrics", "query-token-1", "")
	if code != 200 || !strings.Contains(metrics, `clickagg_ingest_requests_refused_total{reason="unauthorized"} 2`) {
		t.Errorf("/metrics %d lacks the two refusals:\n%s", code, metrics)
	}
	if strings.Contains(serveErr.String(), "token-") {
		t.Errorf("a token reached the log: %s", serveErr.String())
	}
	stop()
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d: %s", code, serveErr.String())
	}
}

func TestMain(m *testing.M) { testenv.Main(m) }
