package services

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// AnalystUser is the read-only ClickHouse login for SQL analysts that the
// local servers (users.xml) and docker-compose.yml (deploy/clickhouse/
// analyst.sh) create.
const AnalystUser = "analyst"

// AnalystPasswordEnv names the variable Up takes the analyst's password
// from; Status.Env prints it under the same name.
const AnalystPasswordEnv = "CLICKAGG_ANALYST_PASSWORD"

// The analyst's limits. They are meant for one production box that also
// ingests: a person's query may use a fair share of it, never all of it.
// deploy/clickhouse/analyst.sh sets the same values on modern servers
// (deploy/compose_test.go compares them with AnalystProfile and
// AnalystQuota).
const (
	// Per query: a minute of wall time, 2 GiB of memory, 2 billion rows
	// read from tables (a day of events at the seeds' 50k/s peak is 4.3
	// billion: ask the aggregates, or a shorter range) and a million rows
	// of result (a result for a person or a spreadsheet, not an export).
	AnalystMaxExecutionTime = 60 // seconds
	AnalystMaxMemoryUsage   = 2 << 30
	AnalystMaxRowsToRead    = 2_000_000_000
	AnalystMaxResultRows    = 1_000_000
	// All of the analyst's queries at once: 4 running, 4 GiB together.
	AnalystMaxConcurrentQueries  = 4
	AnalystMaxMemoryUsageForUser = 4 << 30

	// Per hour, for the analyst login as a whole (everyone sharing it):
	// 1000 queries, 100 errors, ten maximal reads and half an hour of
	// query time. Past any of them every query fails until the hour ends.
	AnalystQuotaInterval      = 3600 // seconds
	AnalystQuotaQueries       = 1000
	AnalystQuotaErrors        = 100
	AnalystQuotaReadRows      = 10 * AnalystMaxRowsToRead
	AnalystQuotaExecutionTime = 1800 // seconds
)

// Setting is one name = value of the analyst's profile or quota, as
// users.xml and SQL name it.
type Setting struct{ Name, Value string }

// AnalystProfile is the analyst's settings profile. readonly = 1 refuses
// every statement but reads and every change of a setting (SET, SETTINGS
// clauses, URL parameters), so none of the limits can be lifted; settings a
// native client sends are ignored.
var AnalystProfile = []Setting{
	{"readonly", "1"},
	{"max_execution_time", strconv.FormatInt(AnalystMaxExecutionTime, 10)},
	{"max_memory_usage", strconv.FormatInt(AnalystMaxMemoryUsage, 10)},
	{"max_rows_to_read", strconv.FormatInt(AnalystMaxRowsToRead, 10)},
	{"max_result_rows", strconv.FormatInt(AnalystMaxResultRows, 10)},
	{"result_overflow_mode", "throw"},
	{"max_concurrent_queries_for_user", strconv.FormatInt(AnalystMaxConcurrentQueries, 10)},
	{"max_memory_usage_for_user", strconv.FormatInt(AnalystMaxMemoryUsageForUser, 10)},
}

// AnalystQuota is what the analyst may use per AnalystQuotaInterval.
var AnalystQuota = []Setting{
	{"queries", strconv.FormatInt(AnalystQuotaQueries, 10)},
	{"errors", strconv.FormatInt(AnalystQuotaErrors, 10)},
	{"read_rows", strconv.FormatInt(AnalystQuotaReadRows, 10)},
	{"execution_time", strconv.FormatInt(AnalystQuotaExecutionTime, 10)},
}

// Analyst is the analyst login a server's users.xml defines.
type Analyst struct {
	Password string // users.xml keeps only its SHA-256
	// Databases it may read besides system; empty: all of them (test
	// servers, whose databases have random names).
	Databases []string
}

func (a Analyst) passwordSHA256() string {
	sum := sha256.Sum256([]byte(a.Password))
	return hex.EncodeToString(sum[:])
}

// randomPassword is 128 random bits in hex: no character a shell, a URL or
// XML would have to quote.
func randomPassword() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

func (l layout) analystPasswordFile() string { return filepath.Join(l.dir, "analyst_password") }

// analystPassword returns the password Up gives the analyst and keeps it in
// the data directory (mode 0600) for Read and the next Up: o.AnalystPassword,
// else $CLICKAGG_ANALYST_PASSWORD, else the one kept, else a new random one.
func (l layout) analystPassword(o Options) (string, error) {
	kept, err := l.readAnalystPassword()
	if err != nil {
		return "", err
	}
	pw := o.AnalystPassword
	if pw == "" {
		pw = os.Getenv(AnalystPasswordEnv)
	}
	if strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("analyst password: %s must be a single line", AnalystPasswordEnv)
	}
	switch {
	case pw == "" && kept != "":
		return kept, nil
	case pw == "":
		pw = randomPassword()
	case pw == kept:
		return pw, nil
	}
	if err := writeFileAtomic(l.analystPasswordFile(), []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("analyst password: %w", err)
	}
	return pw, nil
}

// readAnalystPassword returns the kept password, "" when there is none.
func (l layout) readAnalystPassword() (string, error) {
	b, err := os.ReadFile(l.analystPasswordFile())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("analyst password: %w", err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// writeUsers writes dir/users.xml for analyst unless it holds that already,
// and reports whether it changed. A running server reloads the file by
// itself within seconds (18.16 looks every 2 s).
func writeUsers(dir string, analyst Analyst) (changed bool, err error) {
	if analyst.Password == "" {
		return false, errors.New("clickhouse users.xml: no analyst password")
	}
	var b strings.Builder
	err = usersXML.Execute(&b, struct {
		Analyst
		PasswordSHA256 string
		Profile, Quota []Setting
		QuotaInterval  int
	}{analyst, analyst.passwordSHA256(), AnalystProfile, AnalystQuota, AnalystQuotaInterval})
	if err != nil {
		return false, fmt.Errorf("clickhouse users.xml: %w", err)
	}
	path := filepath.Join(dir, "users.xml")
	if old, err := os.ReadFile(path); err == nil && string(old) == b.String() {
		return false, nil
	}
	oldInfo, statErr := os.Stat(path)
	// Written whole and renamed: the server must never load half a file.
	if err := writeFileAtomic(path, []byte(b.String()), 0o600); err != nil {
		return false, fmt.Errorf("clickhouse users.xml: %w", err)
	}
	// 18.16 reloads a file whose modification time differs from the one it
	// loaded, in whole seconds: a file rewritten within the second it was
	// last written in would never be reloaded (seen in TestUpAnalyst).
	if statErr == nil {
		if last := oldInfo.ModTime().Unix(); time.Now().Unix() <= last {
			next := time.Unix(last+1, 0)
			if err := os.Chtimes(path, next, next); err != nil {
				return false, fmt.Errorf("clickhouse users.xml: %w", err)
			}
		}
	}
	return true, nil
}

// waitAnalyst waits until the server at baseURL lets the analyst in with
// its password, i.e. has loaded the users.xml written for it.
func waitAnalyst(ctx context.Context, baseURL string, analyst Analyst, limit time.Duration, failure func() string) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		_, err := queryAs(ctx, baseURL, AnalystUser, analyst.Password, "", "SELECT 1")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("clickhouse has not let the %s user in after %v: %v", AnalystUser, limit, err)
			if f := failure(); f != "" {
				msg += "; last server error: " + f
			}
			return errors.New(msg)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
