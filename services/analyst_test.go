package services_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/services"
)

// answer is ClickHouse's answer to one HTTP request.
type answer struct {
	status int
	body   string
	code   proto.Error // from "Code: N" when the query failed, else 0
}

func (a answer) String() string {
	return fmt.Sprintf("HTTP %d, code %d (%s): %.300s", a.status, int(a.code), a.code, strings.TrimSpace(a.body))
}

var codeRE = regexp.MustCompile(`(?m)^Code: (\d+)`)

// login says who a request is from and how it says so.
type login struct {
	user, password string
	how            string // "basic" (default), "params", "headers"
}

// ask sends query to ClickHouse's HTTP interface with the given URL
// parameters. wait_end_of_query=1 makes an error found while the result
// streams (a result limit) an HTTP error instead of a 200 with the error at
// the end of the body.
func ask(t *testing.T, baseURL string, who login, params url.Values, query string) answer {
	t.Helper()
	a, err := do(baseURL, who, params, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return a
}

// do is ask for goroutines other than the test's.
func do(baseURL string, who login, params url.Values, query string) (answer, error) {
	q := url.Values{"wait_end_of_query": {"1"}}
	for k, v := range params {
		q[k] = v
	}
	if who.how == "params" {
		q.Set("user", who.user)
		q.Set("password", who.password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/?"+q.Encode(), strings.NewReader(query))
	if err != nil {
		return answer{}, err
	}
	switch who.how {
	case "", "basic":
		if who.user != "" {
			req.SetBasicAuth(who.user, who.password)
		}
	case "headers":
		req.Header.Set("X-ClickHouse-User", who.user)
		req.Header.Set("X-ClickHouse-Key", who.password)
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, body: string(body)}
	if m := codeRE.FindStringSubmatch(a.body); m != nil && a.status != http.StatusOK {
		n, _ := strconv.Atoi(m[1])
		a.code = proto.Error(n)
	}
	return a, nil
}

func analystOf(t *testing.T, db testenv.ClickHouseDB) login {
	t.Helper()
	o := db.AnalystOptions(t) // skips for an external server
	return login{user: o.User, password: o.Password}
}

// okAs runs query as who in db and returns its output without the final
// newline, failing the test on any error.
func okAs(t *testing.T, db testenv.ClickHouseDB, who login, query string) string {
	t.Helper()
	a := ask(t, db.HTTPURL, who, url.Values{"database": {db.Database}}, query)
	if a.status != http.StatusOK {
		t.Fatalf("%s as %q: %v", query, who.user, a)
	}
	return strings.TrimRight(a.body, "\n")
}

// refused checks that query as who fails with ClickHouse's error want.
func refused(t *testing.T, db testenv.ClickHouseDB, who login, params url.Values, query string, want proto.Error) {
	t.Helper()
	p := url.Values{"database": {db.Database}}
	for k, v := range params {
		p[k] = v
	}
	a := ask(t, db.HTTPURL, who, p, query)
	if a.code != want {
		t.Errorf("%s %v as %q: %v; want code %d (%s)", query, params, who.user, a, int(want), want)
	}
}

// documentedTables are the tables and views schema/README.md describes in
// its "Tables" section.
func documentedTables(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "schema", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The "## Tables" section, up to the next section.
	_, text, _ := strings.Cut(string(b), "\n## Tables\n")
	text, _, _ = strings.Cut(text, "\n## ")
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9_]+)` \\|").FindAllStringSubmatch(text, -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatal("schema/README.md lists no table")
	}
	return out
}

// TestAnalystReadsEveryTable: the analyst can read every table and view of
// the migrated schema, each of which schema/README.md documents, and
// explore them through system.tables and system.columns.
func TestAnalystReadsEveryTable(t *testing.T) {
	t.Parallel()
	db := testenv.Migrated(t)
	analyst := analystOf(t, db)
	documented := documentedTables(t)

	tables := strings.Fields(testenv.QueryString(t, db,
		"SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name"))
	if !slices.Contains(tables, "events") || !slices.Contains(tables, "ad_stats_minute_mv") {
		t.Fatalf("migrated tables %q: no events or ad_stats_minute_mv", tables)
	}
	for _, name := range tables {
		if !documented[name] {
			t.Errorf("table %s is not documented in schema/README.md (add a row to its table list)", name)
		}
		okAs(t, db, analyst, "SELECT * FROM "+name+" LIMIT 1")
		okAs(t, db, analyst, "SELECT count() FROM "+name)
	}
	colsQuery := "SELECT count() FROM system.columns WHERE database = '" + db.Database + "'"
	if got, want := okAs(t, db, analyst, colsQuery), testenv.QueryString(t, db, colsQuery); got != want || got == "0" {
		t.Errorf("system.columns as analyst: %s columns, default user sees %s", got, want)
	}
	tablesQuery := "SELECT name FROM system.tables WHERE database = '" + db.Database + "' ORDER BY name"
	if got := strings.Fields(okAs(t, db, analyst, tablesQuery)); !slices.Equal(got, tables) {
		t.Errorf("system.tables as analyst: %q, want %q", got, tables)
	}

	// The session runs with the analyst profile, and with the usual CSV
	// (not the kafka_engine system profile's).
	var names []string
	for _, s := range services.AnalystProfile {
		names = append(names, "'"+s.Name+"'")
	}
	got := okAs(t, db, analyst, "SELECT name, value FROM system.settings WHERE name IN ("+strings.Join(names, ", ")+") ORDER BY name")
	var want []string
	for _, s := range services.AnalystProfile {
		want = append(want, s.Name+"\t"+s.Value)
	}
	slices.Sort(want)
	if got != strings.Join(want, "\n") {
		t.Errorf("analyst settings:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	if got := okAs(t, db, analyst, "SELECT 'a,b' AS x, 1 AS y FORMAT CSV"); got != `"a,b",1` {
		t.Errorf("CSV for the analyst = %q, want the usual comma-separated quoting", got)
	}

	// The native protocol, as clickhouse-client and drivers use it.
	conn, err := chclient.Open(db.AnalystOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(t.Context(), "SELECT count() FROM events").Scan(&n); err != nil || n != 0 {
		t.Errorf("native count() of events = %d, %v", n, err)
	}
}

// TestAnalystClients: the analyst logs in over HTTP in each way ClickHouse
// takes credentials and with clickhouse-client; a wrong password or user
// is refused.
func TestAnalystClients(t *testing.T) {
	t.Parallel()
	db := testenv.Migrated(t)
	analyst := analystOf(t, db)
	for _, how := range []string{"basic", "params", "headers"} {
		who := analyst
		who.how = how
		if got := okAs(t, db, who, "SELECT count() FROM events"); got != "0" {
			t.Errorf("%s: %q", how, got)
		}
		refused(t, db, login{analyst.user, analyst.password + "x", how}, nil, "SELECT 1", proto.ErrWrongPassword)
	}
	refused(t, db, login{"nobody", analyst.password, "basic"}, nil, "SELECT 1", proto.ErrUnknownUser)

	bin, err := exec.LookPath("clickhouse-client")
	testenv.Must(t, err)
	out, err := exec.CommandContext(t.Context(), bin, "--host", "127.0.0.1", "--port", strconv.Itoa(db.Server.TCPPort),
		"--user", analyst.user, "--password", analyst.password, "--database", db.Database,
		// Ignored: a read-only session keeps its profile's settings.
		"--max_rows_to_read", "0",
		"--query", "SELECT count() FROM events; SELECT value FROM system.settings WHERE name = 'max_rows_to_read'",
		"--multiquery").CombinedOutput()
	if want := "0\n" + strconv.Itoa(services.AnalystMaxRowsToRead) + "\n"; err != nil || string(out) != want {
		t.Errorf("clickhouse-client as analyst: %v\n%s\nwant\n%s", err, out, want)
	}
	out, err = exec.CommandContext(t.Context(), bin, "--host", "127.0.0.1", "--port", strconv.Itoa(db.Server.TCPPort),
		"--user", analyst.user, "--password", "wrong", "--query", "SELECT 1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("Code: %d", proto.ErrWrongPassword)) {
		t.Errorf("clickhouse-client with a wrong password: %v\n%s", err, out)
	}
}

// TestAnalystRefusedWrites: every statement that writes, changes the
// schema or lifts a limit is refused with READONLY, and nothing changed.
func TestAnalystRefusedWrites(t *testing.T) {
	t.Parallel()
	db := testenv.Migrated(t)
	analyst := analystOf(t, db)
	before := testenv.QueryString(t, db, "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name")
	for _, c := range []struct {
		query  string
		params url.Values
	}{
		{"INSERT INTO events (event_id, ad_id) VALUES ('e1', 'ad1')", nil},
		{"INSERT INTO dead_letters SELECT * FROM dead_letters", nil},
		{"ALTER TABLE events DELETE WHERE 1", nil},
		{"ALTER TABLE events ADD COLUMN x UInt8", nil},
		{"ALTER TABLE ad_stats_minute DROP PARTITION 20260101", nil},
		{"DROP TABLE events", nil},
		{"DROP TABLE ad_stats_minute_mv", nil},
		{"TRUNCATE TABLE events", nil},
		{"RENAME TABLE events TO events_old", nil},
		{"DETACH TABLE events", nil},
		{"OPTIMIZE TABLE ad_stats_minute FINAL", nil},
		{"CREATE TABLE x (n UInt8) ENGINE = Memory", nil},
		{"CREATE TEMPORARY TABLE x (n UInt8) ENGINE = Memory", nil},
		{"CREATE VIEW v AS SELECT 1", nil},
		{"CREATE DATABASE x", nil},
		// Limits cannot be lifted (or changed at all) in any way.
		{"SET max_memory_usage = 100000000000", nil},
		{"SET readonly = 0", nil},
		{"SET profile = 'default'", nil},
		{"SELECT 1 SETTINGS max_execution_time = 100000", nil},
		{"SELECT 1", url.Values{"max_execution_time": {"100000"}}},
		{"SELECT 1", url.Values{"max_rows_to_read": {"0"}}},
		{"SELECT 1", url.Values{"readonly": {"0"}}},
		{"SELECT 1", url.Values{"profile": {"default"}}},
		// Table functions are refused in readonly mode on 18.16.
		{"SELECT count() FROM numbers(10)", nil},
	} {
		refused(t, db, analyst, c.params, c.query, proto.ErrReadonly)
	}
	after := testenv.QueryString(t, db, "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name")
	if after != before {
		t.Errorf("tables changed:\n%s\nwere\n%s", after, before)
	}
	if n := testenv.QueryString(t, db, "SELECT count() FROM events"); n != "0" {
		t.Errorf("events has %s rows after the refused inserts", n)
	}
}

// TestAnalystLimits: deliberately heavy queries are stopped by the
// profile's limits with ClickHouse's errors, settings a native client
// sends do not lift them, and the server goes on answering.
func TestAnalystLimits(t *testing.T) {
	t.Parallel()
	db := testenv.Migrated(t)
	analyst := analystOf(t, db)
	for _, c := range []struct {
		name, query string
		want        proto.Error
	}{
		// An unbounded scan: max_rows_to_read, after about half a second.
		{"rows", "SELECT count() FROM system.numbers", proto.ErrTooManyRows},
		// 80 KB arrays per row, collected: max_memory_usage.
		{"memory", "SELECT length(groupArray(range(10000))) FROM (SELECT number FROM system.numbers LIMIT 1000000)", proto.ErrMemoryLimitExceeded},
		// One row more than max_result_rows.
		{"result", fmt.Sprintf("SELECT number FROM system.numbers LIMIT %d", services.AnalystMaxResultRows+1), proto.ErrTooManyRowsOrBytes},
	} {
		start := time.Now()
		refused(t, db, analyst, nil, c.query, c.want)
		t.Logf("%s: refused after %v", c.name, time.Since(start).Round(time.Millisecond))
	}
	// Exactly max_result_rows rows are fine.
	n := okAs(t, db, analyst, fmt.Sprintf("SELECT count() FROM (SELECT number FROM system.numbers LIMIT %d)", services.AnalystMaxResultRows))
	if n != strconv.Itoa(services.AnalystMaxResultRows) {
		t.Errorf("count = %s", n)
	}

	// Settings sent with a native query are ignored in a read-only session.
	conn, err := chclient.Open(db.AnalystOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := clickhouse.Context(t.Context(), clickhouse.WithSettings(clickhouse.Settings{"max_rows_to_read": 0, "max_execution_time": 100000}))
	var v string
	if err := conn.QueryRow(ctx, "SELECT value FROM system.settings WHERE name = 'max_rows_to_read'").Scan(&v); err != nil || v != strconv.Itoa(services.AnalystMaxRowsToRead) {
		t.Errorf("native max_rows_to_read with 0 sent = %q, %v; want the profile's %d", v, err, services.AnalystMaxRowsToRead)
	}
	var count uint64
	err = conn.QueryRow(ctx, "SELECT count() FROM system.numbers").Scan(&count)
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) || proto.Error(ex.Code) != proto.ErrTooManyRows {
		t.Errorf("native unbounded scan with max_rows_to_read=0 sent: %v, want code %d (%s)", err, int(proto.ErrTooManyRows), proto.ErrTooManyRows)
	}

	// The server is up and answers both users.
	if err := ping(db.HTTPURL); err != nil {
		t.Fatal(err)
	}
	if got := testenv.QueryString(t, db, "SELECT 1"); got != "1" {
		t.Errorf("default user: %q", got)
	}
	if got := okAs(t, db, analyst, "SELECT 1"); got != "1" {
		t.Errorf("analyst: %q", got)
	}
}

func ping(baseURL string) error {
	resp, err := http.Get(baseURL + "/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(b) != "Ok.\n" {
		return fmt.Errorf("ping: %s %q", resp.Status, b)
	}
	return nil
}

// usersFile is what the test reads back from users.xml.
type usersFile struct {
	Profiles struct {
		Analyst struct {
			Settings []xmlSetting `xml:",any"`
		} `xml:"analyst"`
	} `xml:"profiles"`
	Users struct {
		Analyst struct {
			SHA256    string   `xml:"password_sha256_hex"`
			Networks  []string `xml:"networks>ip"`
			Profile   string   `xml:"profile"`
			Quota     string   `xml:"quota"`
			Databases []string `xml:"allow_databases>database"`
		} `xml:"analyst"`
	} `xml:"users"`
	Quotas struct {
		Analyst struct {
			Interval struct {
				Duration int          `xml:"duration"`
				Limits   []xmlSetting `xml:",any"`
			} `xml:"interval"`
		} `xml:"analyst"`
	} `xml:"quotas"`
}

type xmlSetting struct {
	XMLName xml.Name
	Value   string `xml:",chardata"`
}

func readUsers(t *testing.T, dir string) usersFile {
	t.Helper()
	path := filepath.Join(dir, "users.xml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := perm(path); m != 0o600 {
		t.Errorf("users.xml mode %v, want 0600", m)
	}
	var u usersFile
	if err := xml.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	return u
}

func settings(xs []xmlSetting) []services.Setting {
	var out []services.Setting
	for _, x := range xs {
		out = append(out, services.Setting{Name: x.XMLName.Local, Value: x.Value})
	}
	return out
}

// perm is the permission bits of path, 0 if it cannot be read.
func perm(path string) fs.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Mode().Perm()
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestAnalystQuotaAndConcurrency runs on a server of its own: it uses up the
// analyst's hourly error quota.
func TestAnalystQuotaAndConcurrency(t *testing.T) {
	t.Parallel()
	db := testenv.OwnClickHouse(t)
	analyst := analystOf(t, db)

	// users.xml holds the profile and quota of analyst.go, and the
	// password only as its SHA-256.
	u := readUsers(t, db.Server.Dir)
	if got := settings(u.Profiles.Analyst.Settings); !slices.Equal(got, services.AnalystProfile) {
		t.Errorf("users.xml analyst profile %v, want %v", got, services.AnalystProfile)
	}
	if q := u.Quotas.Analyst.Interval; q.Duration != services.AnalystQuotaInterval || !slices.Equal(settings(q.Limits), services.AnalystQuota) {
		t.Errorf("users.xml analyst quota %d s %v, want %d s %v", q.Duration, settings(q.Limits), services.AnalystQuotaInterval, services.AnalystQuota)
	}
	a := u.Users.Analyst
	if a.SHA256 != sha256Hex(analyst.password) || a.Profile != "analyst" || a.Quota != "analyst" ||
		!slices.Equal(a.Networks, []string{"::1", "127.0.0.1"}) || len(a.Databases) != 0 {
		t.Errorf("users.xml analyst user: %+v", a)
	}
	if b, _ := os.ReadFile(filepath.Join(db.Server.Dir, "users.xml")); strings.Contains(string(b), analyst.password) {
		t.Error("users.xml holds the analyst's password in clear")
	}

	// max_concurrent_queries_for_user: with that many queries running,
	// one more is refused.
	var wg sync.WaitGroup
	answers := make([]answer, services.AnalystMaxConcurrentQueries)
	errs := make([]error, len(answers))
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = do(db.HTTPURL, analyst, nil, "SELECT sleep(3)")
		}()
	}
	deadline := time.Now().Add(3 * time.Second)
	for testenv.QueryString(t, db, "SELECT count() FROM system.processes WHERE user = 'analyst'") != strconv.Itoa(len(answers)) {
		if time.Now().After(deadline) {
			t.Fatal("the analyst's queries are not all running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	refused(t, db, analyst, nil, "SELECT 1", proto.ErrTooManySimultaneousQueries)
	wg.Wait()
	for i, a := range answers {
		if errs[i] != nil || a.status != http.StatusOK {
			t.Errorf("query %d: %v, %v", i, a, errs[i])
		}
	}

	// The hourly error quota: once used up, every query is refused until the
	// hour ends (hours start on the clock hour; two intervals' worth of
	// errors covers a test that runs across one).
	used := 0
	for ; used < 2*services.AnalystQuotaErrors+2; used++ {
		a := ask(t, db.HTTPURL, analyst, nil, "SELECT no_such_column")
		if a.code == proto.ErrQuotaExceeded {
			break
		}
		if a.code != proto.ErrUnknownIdentifier {
			t.Fatalf("bad query %d: %v", used, a)
		}
	}
	if used < services.AnalystQuotaErrors-1 || used > 2*services.AnalystQuotaErrors+1 {
		t.Errorf("quota refused the analyst after %d errors, want about %d", used, services.AnalystQuotaErrors)
	}
	refused(t, db, analyst, nil, "SELECT 1", proto.ErrQuotaExceeded)
	if got := testenv.QueryString(t, db, "SELECT 1"); got != "1" {
		t.Errorf("default user after the analyst's quota: %q", got)
	}
}

// TestUpAnalyst: Up makes the analyst login of the local services, limited
// to the clickagg database, keeps its password, and a changed password
// takes effect on the running server without a restart.
func TestUpAnalyst(t *testing.T) {
	t.Setenv(services.AnalystPasswordEnv, "")
	dir := t.TempDir()
	ports := freePorts(t, 3)
	o := services.Options{Dir: dir, NoInstall: true, Log: logWriter{t}, AnalystPassword: "first pw!",
		Ports: services.Ports{ClickHouseHTTP: ports[0], ClickHouseNative: ports[1], Redis: ports[2]}}
	t.Cleanup(func() { services.Down(context.Background(), o) })
	s, err := services.Up(t.Context(), o)
	testenv.Must(t, err)
	if s.AnalystUser != services.AnalystUser || s.AnalystPassword != "first pw!" {
		t.Errorf("status analyst %q %q", s.AnalystUser, s.AnalystPassword)
	}
	if env := s.Env(); !strings.Contains(env, "CLICKAGG_ANALYST_USER=analyst\n") || !strings.Contains(env, "CLICKAGG_ANALYST_PASSWORD='first pw!'\n") {
		t.Errorf("Env lacks the analyst:\n%s", env)
	}
	chDir := filepath.Join(dir, "clickhouse")
	if u := readUsers(t, chDir).Users.Analyst; !slices.Equal(u.Databases, []string{"clickagg"}) || u.SHA256 != sha256Hex("first pw!") {
		t.Errorf("users.xml analyst: %+v", u)
	}
	if m := perm(filepath.Join(dir, "analyst_password")); m != 0o600 {
		t.Errorf("analyst_password mode %v, want 0600", m)
	}

	db := testenv.ClickHouseDB{HTTPURL: s.ClickHouseHTTP, Database: "clickagg"}
	first := login{user: services.AnalystUser, password: "first pw!"}
	testenv.Exec(t, db, "CREATE TABLE t (n UInt8) ENGINE = Memory")
	testenv.Exec(t, db, "INSERT INTO t VALUES (7)")
	testenv.Exec(t, testenv.ClickHouseDB{HTTPURL: s.ClickHouseHTTP}, "CREATE TABLE default.secret (n UInt8) ENGINE = Memory")
	if got := okAs(t, db, first, "SELECT sum(n) FROM t"); got != "7" {
		t.Errorf("analyst sum = %q", got)
	}
	// Other databases are out of reach, system stays readable and lists
	// only what the analyst may read.
	refused(t, db, first, nil, "SELECT * FROM default.secret", proto.ErrDatabaseAccessDenied)
	if got := okAs(t, db, first, "SELECT groupArray(name) FROM system.tables WHERE name IN ('t', 'secret')"); got != "['t']" {
		t.Errorf("system.tables as analyst: %s, want only t", got)
	}
	if got := okAs(t, db, first, "SELECT groupUniqArray(database) FROM system.columns WHERE database IN ('clickagg', 'default')"); got != "['clickagg']" {
		t.Errorf("system.columns as analyst: databases %s, want only clickagg", got)
	}

	// Up again: nothing changes, the password is kept.
	o.AnalystPassword = ""
	usersBefore, _ := os.ReadFile(filepath.Join(chDir, "users.xml"))
	again, err := services.Up(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, s) {
		t.Errorf("second Up changed the status:\n%+v\n%+v", s, again)
	}
	if usersAfter, _ := os.ReadFile(filepath.Join(chDir, "users.xml")); string(usersAfter) != string(usersBefore) {
		t.Error("second Up rewrote users.xml differently")
	}

	// A new password from the environment works as soon as Up returns, on
	// the same server process; the old one is refused.
	t.Setenv(services.AnalystPasswordEnv, "second-pw")
	start := time.Now()
	third, err := services.Up(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Up with a new password took %v", time.Since(start).Round(time.Millisecond))
	if third.AnalystPassword != "second-pw" || third.ClickHousePID != s.ClickHousePID {
		t.Errorf("after the new password: %+v (pid was %d)", third, s.ClickHousePID)
	}
	if got := okAs(t, db, login{user: services.AnalystUser, password: "second-pw"}, "SELECT sum(n) FROM t"); got != "7" {
		t.Errorf("analyst with the new password: %q", got)
	}
	refused(t, db, first, nil, "SELECT 1", proto.ErrWrongPassword)
	if st, err := services.Read(services.Options{Dir: dir}); err != nil || st.AnalystPassword != "second-pw" {
		t.Errorf("Read: %+v, %v", st, err)
	}
}

// TestAnalystPassword: Up's analyst password comes from the options, then
// the environment, then what the directory keeps, else it is made once.
func TestAnalystPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "analyst_password")
	t.Setenv(services.AnalystPasswordEnv, "")
	o := services.Options{Dir: dir}

	generated, err := services.AnalystPasswordForUp(o)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(generated) {
		t.Errorf("generated password %q, want 128 bits in hex", generated)
	}
	if m := perm(file); m != 0o600 {
		t.Fatalf("kept in %s with mode %v, want 0600", file, m)
	}
	if again, err := services.AnalystPasswordForUp(o); err != nil || again != generated {
		t.Errorf("second call: %q, %v; want the kept %q", again, err, generated)
	}
	if b, _ := os.ReadFile(file); string(b) != generated+"\n" {
		t.Errorf("file holds %q", b)
	}

	t.Setenv(services.AnalystPasswordEnv, "from env")
	if pw, err := services.AnalystPasswordForUp(o); err != nil || pw != "from env" {
		t.Errorf("with %s set: %q, %v", services.AnalystPasswordEnv, pw, err)
	}
	o.AnalystPassword = "from options"
	if pw, err := services.AnalystPasswordForUp(o); err != nil || pw != "from options" {
		t.Errorf("with Options.AnalystPassword: %q, %v", pw, err)
	}
	// Unset again: the last one set is kept, not a new one made.
	t.Setenv(services.AnalystPasswordEnv, "")
	o.AnalystPassword = ""
	if pw, err := services.AnalystPasswordForUp(o); err != nil || pw != "from options" {
		t.Errorf("after unsetting: %q, %v; want the kept one", pw, err)
	}
	if m := perm(file); m != 0o600 {
		t.Errorf("after rewriting: mode %v", m)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	o.AnalystPassword = "third"
	if _, err := services.AnalystPasswordForUp(o); err != nil {
		t.Fatal(err)
	}
	if m := perm(file); m != 0o600 {
		t.Errorf("a rewritten 0644 file: mode %v", m)
	}

	o.AnalystPassword = "two\nlines"
	if _, err := services.AnalystPasswordForUp(o); err == nil {
		t.Error("a password with a newline was taken")
	}
	if _, err := services.AnalystPasswordForUp(services.Options{Dir: filepath.Join(dir, "missing", "dir")}); err == nil {
		t.Error("no error for a directory that does not exist")
	}
}
