package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/clickagg/clickagg/queryapi"
)

// securityConfig is serve's access control: bearer tokens per side and the
// request limits.
type securityConfig struct {
	ingestTokensFile, queryTokensFile string
	ingestRate                        float64
	ingestBurst, maxConcurrent        int
}

func (s *securityConfig) register(f *flags) {
	f.str(&s.ingestTokensFile, "ingest-tokens-file", "CLICKAGG_INGEST_TOKENS_FILE", "", "file of the bearer tokens accepted on POST /v1/events, one a line, # comments; with CLICKAGG_INGEST_TOKENS (comma-separated, environment only); none: ingest is open")
	f.str(&s.queryTokensFile, "query-tokens-file", "CLICKAGG_QUERY_TOKENS_FILE", "", "file of the bearer tokens accepted on the query, status and /metrics routes, like --ingest-tokens-file; with CLICKAGG_QUERY_TOKENS; none: queries are open")
	floatFlag(f, &s.ingestRate, "ingest-rate", "CLICKAGG_INGEST_RATE", 0, "ingest requests per second per token (per client address while ingest is open); past it 429 with Retry-After (0: no limit)")
	f.int(&s.ingestBurst, "ingest-burst", "CLICKAGG_INGEST_BURST", 0, "ingest requests a token may send at once above --ingest-rate (0: the rate, at least 1)")
	f.int(&s.maxConcurrent, "max-concurrent", "CLICKAGG_MAX_CONCURRENT", 4096, "requests handled at once, health and docs excepted; past it 503 with Retry-After (0: no limit); bounds goroutines and memory when clients pile up")
}

// floatFlag is flags.int for a float64.
func floatFlag(f *flags, p *float64, name, env string, def float64, usage string) {
	if v, err := strconv.ParseFloat(os.Getenv(env), 64); err == nil {
		def = v
	}
	f.Float64Var(p, name, def, usage+" ["+env+"]")
}

// apply loads the tokens into a, keeping its Hooks.
func (s *securityConfig) apply(a *queryapi.AuthOptions) error {
	if math.IsNaN(s.ingestRate) || math.IsInf(s.ingestRate, 0) || s.ingestRate < 0 {
		return fmt.Errorf("ingest rate %v: want a number of requests per second, 0 for no limit", s.ingestRate)
	}
	if s.ingestBurst < 0 {
		return fmt.Errorf("ingest burst %d: want 0 or more", s.ingestBurst)
	}
	if s.maxConcurrent < 0 {
		return fmt.Errorf("max concurrent %d: want 0 or more", s.maxConcurrent)
	}
	ingest, err := loadTokens("CLICKAGG_INGEST_TOKENS", s.ingestTokensFile)
	if err != nil {
		return err
	}
	query, err := loadTokens("CLICKAGG_QUERY_TOKENS", s.queryTokensFile)
	if err != nil {
		return err
	}
	a.IngestTokens, a.QueryTokens = ingest, query
	a.IngestRate, a.IngestBurst, a.MaxConcurrent = s.ingestRate, s.ingestBurst, s.maxConcurrent
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
