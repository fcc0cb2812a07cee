package reconcile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
)

// TestCLI runs `clickagg reconcile` and `clickagg replay` as cron would: the
// built binary, configured by environment, judged by exit code and output.
// (The command lives in package main; building it is how a test outside
// cmd/clickagg reaches it.)
func TestCLI(t *testing.T) {
	db := testenv.Migrated(t)
	load(t, db)
	bin := filepath.Join(t.TempDir(), "clickagg")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/clickagg/clickagg/cmd/clickagg").CombinedOutput(); err != nil {
		t.Fatalf("build clickagg: %v\n%s", err, out)
	}
	env := append(os.Environ(), "CLICKAGG_DATA_DIR="+t.TempDir(), "CLICKAGG_CLICKHOUSE_HTTP="+db.HTTPURL,
		"CLICKAGG_CLICKHOUSE_NATIVE="+db.NativeAddr, "CLICKAGG_CLICKHOUSE_DATABASE="+db.Database)
	clickagg := func(args ...string) (string, string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &errb
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return out.String(), errb.String(), cmd.ProcessState.ExitCode()
	}
	whole := []string{"--from", "2026-11-21T00:00:00Z", "--to", "2026-11-23T00:00:00Z"}

	if _, errs, code := clickagg("reconcile", "--from", "2026-11-21T00:00:30Z", "--to", "2026-11-23T00:00:00Z"); code != 2 || !strings.Contains(errs, "not a whole minute") {
		t.Errorf("unaligned --from: exit %d, %s", code, errs)
	}
	if _, errs, code := clickagg("reconcile", "--from", "yesterday", "--to", "2026-11-23T00:00:00Z"); code != 2 || !strings.Contains(errs, "RFC 3339") {
		t.Errorf("bad --from: exit %d, %s", code, errs)
	}

	out, errs, code := clickagg(append([]string{"reconcile"}, whole...)...)
	if code != 1 || !strings.Contains(errs, "7 differing rows left") ||
		!strings.Contains(out, "7 differing rows, not fixed") || !strings.Contains(out, "ad_stats_daily: 1 differing row") ||
		!strings.Contains(out, "ad_stats_minute: 1 differing row") {
		t.Errorf("reconcile: exit %d\n%s%s", code, out, errs)
	}
	// The slipped resend counted twice: the aggregate's value, then truth's.
	slippedRow := rowOf("ad_stats_minute", event(slipped))
	if !strings.Contains(out, slippedRow["minute"]) || !strings.Contains(out, "2 → 1") {
		t.Errorf("reconcile summary lacks the slipped resend %v:\n%s", slippedRow, out)
	}

	out, _, code = clickagg(append([]string{"reconcile", "--json"}, whole...)...)
	var rep reconcile.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if rep.Differences() != 7 || rep.Fixed || rep.Range != wholeRange || !strings.Contains(out, `"range": {`) ||
		!strings.Contains(out, `"from": "2026-11-21T00:00:00Z"`) {
		t.Errorf("--json report: %s", out)
	}

	if out, errs, code := clickagg(append([]string{"reconcile", "--fix"}, whole...)...); code != 0 || !strings.Contains(out, "7 differing rows, fixed") {
		t.Errorf("--fix: exit %d\n%s%s", code, out, errs)
	}
	if out, errs, code := clickagg(append([]string{"reconcile"}, whole...)...); code != 0 || !strings.Contains(out, ": no differences") {
		t.Errorf("after --fix: exit %d\n%s%s", code, out, errs)
	}
	if out, errs, code := clickagg(append([]string{"replay"}, whole...)...); code != 0 || !strings.Contains(out, "top_ads_minute: not rebuilt, not kept on this server") {
		t.Errorf("replay: exit %d\n%s%s", code, out, errs)
	}
}
