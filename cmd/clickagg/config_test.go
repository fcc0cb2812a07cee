package main

import (
	"bufio"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// commandFlags registers every command's flags as run does, with no local
// services in sight, so that defaults are the built-in ones.
func commandFlags(t *testing.T) map[string]*flags {
	t.Helper()
	t.Setenv("CLICKAGG_DATA_DIR", t.TempDir())
	out := map[string]*flags{}
	for _, c := range commands() {
		f := newFlags(c.name, c.synopsis)
		c.setup(f)
		out[c.name] = f
	}
	return out
}

// badValues are values serve cannot take for its string settings; the
// strings it takes whatever they hold are listed as "" with why.
var badValues = map[string]string{
	"CLICKAGG_LISTEN":                     "8080",
	"CLICKAGG_DEBUG_LISTEN":               "localhost",
	"CLICKAGG_CLICKHOUSE_HTTP":            "127.0.0.1:8123",
	"CLICKAGG_CLICKHOUSE_NATIVE":          "clickhouse",
	"CLICKAGG_REDIS_ADDR":                 "redis",
	"CLICKAGG_KAFKA_BROKERS":              "kafka,kafka:9092",
	"CLICKAGG_ZOOKEEPER":                  "zookeeper",
	"CLICKAGG_LOG_FORMAT":                 "xml",
	"CLICKAGG_LOG_LEVEL":                  "loud",
	"CLICKAGG_INGEST_TOKENS_FILE":         "/nonexistent/tokens",
	"CLICKAGG_QUERY_TOKENS_FILE":          "/nonexistent/tokens",
	"CLICKAGG_CLICKHOUSE_TLS_CA":          "/nonexistent/ca.pem", // TLS off: refused as ignored
	"CLICKAGG_CLICKHOUSE_TLS_CERT":        "/nonexistent/cert.pem",
	"CLICKAGG_CLICKHOUSE_TLS_KEY":         "/nonexistent/key.pem",
	"CLICKAGG_CLICKHOUSE_TLS_SERVER_NAME": "clickhouse.internal",
	"CLICKAGG_REDIS_TLS_CA":               "/nonexistent/ca.pem",
	"CLICKAGG_REDIS_TLS_CERT":             "/nonexistent/cert.pem",
	"CLICKAGG_REDIS_TLS_KEY":              "/nonexistent/key.pem",
	"CLICKAGG_REDIS_TLS_SERVER_NAME":      "redis.internal",
	"CLICKAGG_CLICKHOUSE_CLUSTER":         "", // any name: ClickHouse says whether it is one
	"CLICKAGG_CLICKHOUSE_SHARDS":          "ftp://node1:8123",
	"CLICKAGG_CLICKHOUSE_COMPRESSION":     "gzip",
	"CLICKAGG_CLICKHOUSE_DATABASE":        "", // any name: ClickHouse says whether it exists
	"CLICKAGG_CLICKHOUSE_USER":            "", // any name
	"CLICKAGG_REDIS_USER":                 "", // any name
}

// TestEnvErrors: every variable serve reads, set to a value it cannot
// take, makes serve exit 2 with a line naming the variable, before it
// connects to anything.
func TestEnvErrors(t *testing.T) {
	f := commandFlags(t)["serve"]
	checked := 0
	for _, name := range f.order {
		env := f.env[name]
		if env == "" {
			continue
		}
		bad := ""
		switch f.fs.Lookup(name).Value.(*value).p.(type) {
		case *int, *int64, *uint64, *float64:
			bad = "12x"
		case *bool:
			bad = "no"
		case *time.Duration:
			bad = "10"
		default:
			var listed bool
			if bad, listed = badValues[env]; !listed {
				t.Errorf("%s: a text setting missing from badValues (give a value serve must refuse, or \"\" if it takes any)", env)
			}
		}
		if bad == "" {
			continue
		}
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, bad)
			// Should a variable be taken, serve would fail at once on these
			// addresses; the variable's own flag is left out (the command
			// line wins over the variable).
			args := []string{"serve"}
			for _, a := range [][2]string{{"listen", "127.0.0.1:1"}, {"clickhouse-native", "127.0.0.1:1"}, {"redis-addr", "127.0.0.1:1"}} {
				if f.env[a[0]] != env {
					args = append(args, "--"+a[0], a[1])
				}
			}
			out, errs, code := clickaggRun(t, context.Background(), args...)
			if code != 2 || !strings.Contains(errs, env) || strings.Count(strings.TrimSpace(errs), "\n") != 1 {
				t.Errorf("%s=%q: exit %d, stderr %q, stdout %q; want 2 and one line naming it (and the --help hint)", env, bad, code, errs, out)
			}
		})
		checked++
	}
	if checked < 50 {
		t.Errorf("only %d variables checked", checked)
	}
	// Variables without a flag (secrets): those a value can be wrong for.
	for env, bad := range map[string]string{
		"CLICKAGG_INGEST_TOKENS":            "ok-1, two words",
		"CLICKAGG_QUERY_TOKENS":             " , ",
		"CLICKAGG_CLICKHOUSE_PASSWORD_FILE": "/nonexistent/password",
		"CLICKAGG_REDIS_PASSWORD_FILE":      "/nonexistent/password",
	} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, bad)
			if _, errs, code := clickaggRun(t, context.Background(), "serve", "--listen", "127.0.0.1:1"); code != 2 || !strings.Contains(errs, env) {
				t.Errorf("%s=%q: exit %d, stderr %q; want 2 naming it", env, bad, code, errs)
			}
		})
	}
}

// TestFlagErrors: a bad value on the command line is exit 2 naming the
// flag and the accepted form; a value out of range, the flag, its variable
// and the range.
func TestFlagErrors(t *testing.T) {
	t.Setenv("CLICKAGG_DATA_DIR", t.TempDir())
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"serve", "--linger", "abc"}, []string{"--linger", "want a duration"}},
		{[]string{"serve", "--reconcile-fix=no"}, []string{"--reconcile-fix", "want true or false"}},
		{[]string{"serve", "--inflight", "-1"}, []string{"--inflight [CLICKAGG_INFLIGHT] -1", "want from 1 to 64"}},
		{[]string{"serve", "--max-buffered-rows", "-1"}, []string{"--max-buffered-rows [CLICKAGG_MAX_BUFFERED_ROWS] -1", "want 65536 or more"}},
		{[]string{"serve", "--batch-rows", "0"}, []string{"--batch-rows [CLICKAGG_BATCH_ROWS] 0", "want more than 0"}},
		{[]string{"serve", "--max-inflight-mib", "1"}, []string{"--max-inflight-mib [CLICKAGG_MAX_INFLIGHT_MIB] 1", "want 48 MiB or more"}},
		{[]string{"serve", "--dedup-horizon", "0s"}, []string{"--dedup-horizon [CLICKAGG_DEDUP_HORIZON] 0s", "want more than 0"}},
		{[]string{"generate", "--rate", "0"}, []string{"--rate [CLICKAGG_GENERATE_RATE] 0", "negative for as fast as accepted"}},
		{[]string{"generate", "--batch", "-5"}, []string{"--batch [CLICKAGG_GENERATE_BATCH] -5"}},
		{[]string{"kafka", "enable", "--consumers", "0", "--brokers", "k:9092"}, []string{"--consumers [CLICKAGG_KAFKA_CONSUMERS] 0"}},
		{[]string{"migrate", "up", "--clickhouse-http", "localhost"}, []string{"--clickhouse-http [CLICKAGG_CLICKHOUSE_HTTP] localhost", "http:// or https://"}},
		{[]string{"migrate", "up", "--clickhouse-native", "127.0.0.1:9000,127.0.0.1"}, []string{"--clickhouse-native [CLICKAGG_CLICKHOUSE_NATIVE] 127.0.0.1:9000,127.0.0.1", "host:port[,host:port...]"}},
		{[]string{"serve", "--nope"}, []string{"not defined: --nope"}},
	} {
		_, errs, code := clickaggRun(t, context.Background(), tc.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", tc.args, code, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%v: %q lacks %q", tc.args, errs, w)
			}
		}
	}
	// With CLICKAGG_RECONCILE_FIX=no the old parser kept fixing on.
	t.Setenv("CLICKAGG_RECONCILE_FIX", "no")
	if _, errs, code := clickaggRun(t, context.Background(), "serve"); code != 2 || !strings.Contains(errs, `CLICKAGG_RECONCILE_FIX="no": want true or false`) {
		t.Errorf("CLICKAGG_RECONCILE_FIX=no: exit %d %s", code, errs)
	}
}

// TestEveryNumberMapsToItsField: Validate's errors name a Config field;
// every number serve takes must map back to its flag, or the error would
// name a Go path instead.
func TestEveryNumberMapsToItsField(t *testing.T) {
	f := commandFlags(t)["serve"]
	mapped := map[string]bool{}
	for _, name := range f.fields {
		mapped[name] = true
	}
	for _, name := range f.order {
		switch f.fs.Lookup(name).Value.(*value).p.(type) {
		case *int, *int64, *float64, *time.Duration:
			if !mapped[name] {
				t.Errorf("--%s has no Config field", name)
			}
		}
	}
}

// readmeRow is one row of the README's variables table.
type readmeRow struct {
	env, flag, def string
	commands       []string
}

// readmeVariables parses the table under "### Variables" in README.md.
func readmeVariables(t *testing.T) []readmeRow {
	t.Helper()
	fh, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var rows []readmeRow
	in := false
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "### Variables":
			in = true
			continue
		case !in:
			continue
		case strings.HasPrefix(line, "#"):
			in = false
			continue
		case !strings.HasPrefix(line, "| `CLICKAGG_"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 5 {
			t.Fatalf("README variables row with %d cells: %s", len(cells), line)
		}
		cell := func(i int) string { return strings.Trim(strings.TrimSpace(cells[i]), "`") }
		r := readmeRow{env: cell(0), flag: strings.TrimPrefix(cell(1), "--"), def: cell(3)}
		if !strings.HasPrefix(cell(1), "--") {
			continue // environment only: secrets and tokens
		}
		for c := range strings.SplitSeq(cell(2), ",") {
			r.commands = append(r.commands, strings.Trim(strings.TrimSpace(c), "`"))
		}
		if r.def == "none" {
			r.def = ""
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		t.Fatal(`README.md has no "### Variables" table`)
	}
	return rows
}

// TestREADMEVariables: the README's variables table lists every flag that
// has a variable, under the commands that take it, with the same flag name
// and default, and nothing else.
func TestREADMEVariables(t *testing.T) {
	all := commandFlags(t)
	rows := readmeVariables(t)
	seen := map[[2]string]bool{} // command, variable
	for _, r := range rows {
		for _, cmd := range r.commands {
			f, ok := all[cmd]
			if !ok {
				t.Errorf("README %s: unknown command %q", r.env, cmd)
				continue
			}
			fl := f.fs.Lookup(r.flag)
			if fl == nil || f.env[r.flag] != r.env {
				t.Errorf("README %s: %s has no --%s reading it", r.env, cmd, r.flag)
				continue
			}
			seen[[2]string{cmd, r.env}] = true
			// The README's default, parsed as the flag parses it, must print
			// as the flag's own ("1h" and "1h0m0s" agree).
			v := &value{p: reflect.New(reflect.TypeOf(fl.Value.(*value).p).Elem()).Interface(), form: "?"}
			if err := v.Set(r.def); err != nil || v.String() != fl.DefValue {
				t.Errorf("README %s (%s --%s): default %q, the flag's is %q", r.env, cmd, r.flag, r.def, fl.DefValue)
			}
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range all {
			if !yield(name) {
				return
			}
		}
	})
	for _, cmd := range names {
		f := all[cmd]
		f.fs.VisitAll(func(fl *flag.Flag) {
			if env := f.env[fl.Name]; env != "" && !seen[[2]string{cmd, env}] {
				t.Errorf("README variables table lacks %s (%s --%s, default %q)", env, cmd, fl.Name, fl.DefValue)
			}
		})
	}
}
