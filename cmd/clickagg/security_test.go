package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clickagg/clickagg/queryapi"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecurityApply(t *testing.T) {
	ingestFile := writeFile(t, "# CI pipeline\n\ning-aaaa\n  ing-bbbb   # the SDK\r\n#ing-cccc\n")
	t.Setenv("CLICKAGG_INGEST_TOKENS", " env-1 ,, env-2 ")
	t.Setenv("CLICKAGG_QUERY_TOKENS", "")
	t.Setenv("CLICKAGG_MAX_CONCURRENT", "64")
	f := newFlags("serve", "[flags]")
	var s securityConfig
	var counts queryapi.Refusals
	a := queryapi.AuthOptions{Hooks: &counts}
	s.register(f, &a)
	f.after = append(f.after, func() error { return s.load(&a) })
	if err := f.parse([]string{"--ingest-tokens-file", ingestFile, "--ingest-rate", "2.5", "--ingest-burst", "10"}, 0); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.IngestTokens, []string{"env-1", "env-2", "ing-aaaa", "ing-bbbb"}) || a.QueryTokens != nil {
		t.Errorf("tokens: %q %q", a.IngestTokens, a.QueryTokens)
	}
	if a.IngestRate != 2.5 || a.IngestBurst != 10 || a.MaxConcurrent != 64 || a.Hooks != &counts {
		t.Errorf("options: %+v", a)
	}
	// Tokens themselves are never a flag: they would show in process lists.
	if f.fs.Lookup("ingest-tokens") != nil || f.fs.Lookup("query-tokens") != nil {
		t.Error("a flag takes tokens")
	}
}

func TestSecurityTokenErrors(t *testing.T) {
	const secret = "s3cret-value"
	for _, tc := range []struct {
		name, env, file, want string
	}{
		{"missing file", "", "/nonexistent/tokens", "tokens file /nonexistent/tokens: no such file"},
		{"empty file", "", "# nothing yet\n\n", ": no tokens"},
		{"two on a line", "", "ok-1\n" + secret + " other\n", ": line 2: more than one token"},
		{"control character", "", secret + "\x01\n", ": line 1: characters other than visible ASCII"},
		{"non-ASCII", "", "ok-1\n\n" + secret + "é\n", ": line 3: characters other than visible ASCII"},
		{"env commas only", " , ,", "", "CLICKAGG_QUERY_TOKENS: no tokens"},
		{"env bad token", "ok-1, " + secret + "\t" + secret, "", "CLICKAGG_QUERY_TOKENS: token 2: characters other than visible ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CLICKAGG_QUERY_TOKENS", tc.env)
			s := securityConfig{queryTokensFile: tc.file}
			if tc.file != "" && !strings.HasPrefix(tc.file, "/nonexistent") {
				s.queryTokensFile = writeFile(t, tc.file)
			}
			err := s.load(&queryapi.AuthOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}
