package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/clickagg/clickagg/queryapi"
)

// securityConfig is where serve's bearer tokens come from; the limits go
// straight into queryapi.AuthOptions.
type securityConfig struct {
	ingestTokensFile, queryTokensFile string
}

func (s *securityConfig) register(f *flags, a *queryapi.AuthOptions) {
	f.v(&s.ingestTokensFile, "ingest-tokens-file", "CLICKAGG_INGEST_TOKENS_FILE", "file of the bearer tokens accepted on POST /v1/events, one a line, # comments; with CLICKAGG_INGEST_TOKENS (comma-separated, environment only); none: ingest is open")
	f.v(&s.queryTokensFile, "query-tokens-file", "CLICKAGG_QUERY_TOKENS_FILE", "file of the bearer tokens accepted on the query, status and /metrics routes, like --ingest-tokens-file; with CLICKAGG_QUERY_TOKENS; none: queries are open")
	f.v(&a.IngestRate, "ingest-rate", "CLICKAGG_INGEST_RATE", "ingest requests per second per token (per client address while ingest is open); past it 429 with Retry-After (0: no limit)")
	f.v(&a.IngestBurst, "ingest-burst", "CLICKAGG_INGEST_BURST", "ingest requests a token may send at once above --ingest-rate (0: the rate, at least 1)")
	f.v(&a.MaxConcurrent, "max-concurrent", "CLICKAGG_MAX_CONCURRENT", "requests handled at once, health and docs excepted; past it 503 with Retry-After (0: no limit); bounds goroutines and memory when clients pile up")
}

// load reads the tokens into a.
func (s *securityConfig) load(a *queryapi.AuthOptions) error {
	ingest, err := loadTokens("CLICKAGG_INGEST_TOKENS", s.ingestTokensFile)
	if err != nil {
		return fmt.Errorf("ingest tokens (--ingest-tokens-file [CLICKAGG_INGEST_TOKENS_FILE], CLICKAGG_INGEST_TOKENS): %w", err)
	}
	query, err := loadTokens("CLICKAGG_QUERY_TOKENS", s.queryTokensFile)
	if err != nil {
		return fmt.Errorf("query tokens (--query-tokens-file [CLICKAGG_QUERY_TOKENS_FILE], CLICKAGG_QUERY_TOKENS): %w", err)
	}
	a.IngestTokens, a.QueryTokens = ingest, query
	return nil
}

// loadTokens reads the comma-separated tokens of environment variable env
// and those of file, if named. Errors say where, never what: a token must
// not reach a log.
func loadTokens(env, file string) ([]string, error) {
	var out []string
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		for i, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if err := checkToken(t); err != nil {
				return nil, fmt.Errorf("%s: token %d: %w", env, i+1, err)
			}
			out = append(out, t)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%s: no tokens", env)
		}
	}
	if file == "" {
		return out, nil
	}
	fromFile, err := readTokens(file)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", file, err)
	}
	return append(out, fromFile...), nil
}

// readTokens reads one token a line; blank lines and # comments, whole
// lines or after a token, are skipped. A file without tokens is an error:
// it would leave the side open.
func readTokens(file string) ([]string, error) {
	fh, err := os.Open(file)
	if err != nil {
		// The path is already in the caller's message.
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, pe.Err
		}
		return nil, err
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		words := strings.Fields(sc.Text())
		if len(words) == 0 || strings.HasPrefix(words[0], "#") {
			continue
		}
		if len(words) > 1 && !strings.HasPrefix(words[1], "#") {
			return nil, fmt.Errorf("line %d: more than one token", line)
		}
		if err := checkToken(words[0]); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, words[0])
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no tokens")
	}
	return out, nil
}

// checkToken accepts what a client can send after "Bearer ": visible
// ASCII, no spaces.
func checkToken(t string) error {
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] > '~' {
			return errors.New("characters other than visible ASCII")
		}
	}
	return nil
}
