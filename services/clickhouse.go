package services

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// ClickHouse is one clickhouse-server process with its own config and data
// under Dir. It is not safe for concurrent use.
type ClickHouse struct {
	Dir      string // absolute
	HTTPPort int
	TCPPort  int
	// Analyst is the read-only login (AnalystUser) of this server.
	Analyst Analyst
	// Node is the server's place in a cluster; nil for a server alone.
	Node *Node

	*process
}

// StartClickHouse writes a config into dir, starts a server and waits until
// it answers. Ports 0 pick free ports. The server dies with this process;
// Up starts servers that outlive it. Its analyst login has a random
// password and may read every database.
func StartClickHouse(ctx context.Context, dir string, httpPort, tcpPort int) (*ClickHouse, error) {
	c, err := startClickHouse(ctx, dir, httpPort, tcpPort, Analyst{Password: randomPassword()}, false)
	if err != nil {
		return nil, fmt.Errorf("start clickhouse: %w", err)
	}
	return c, nil
}

func startClickHouse(ctx context.Context, dir string, httpPort, tcpPort int, analyst Analyst, detach bool) (*ClickHouse, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var c *ClickHouse
	err = onFreePorts([]int{httpPort, tcpPort}, func(ports []int) error {
		c = &ClickHouse{Dir: dir, HTTPPort: ports[0], TCPPort: ports[1], Analyst: analyst}
		return c.start(ctx, detach)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// start writes c's config and starts the server on c's ports.
func (c *ClickHouse) start(ctx context.Context, detach bool) error {
	bin, err := lookBinary("clickhouse-server")
	if err != nil {
		return err
	}
	if err := c.writeConfig(); err != nil {
		return err
	}
	name := "clickhouse"
	if c.Node != nil {
		name += " " + c.Node.Name()
	}
	c.process = &process{
		name:    name,
		bin:     bin,
		args:    []string{"--config-file=" + c.configPath()},
		dir:     c.Dir,
		logPath: filepath.Join(c.Dir, "log", "stdout.log"),
		detach:  detach,
		limit:   60 * time.Second,
		grace:   clickHouseGrace,
		ready:   c.ping,
		failure: c.failure,
	}
	return c.process.Start(ctx)
}

// HTTPURL is the base URL of the HTTP interface, without a trailing slash.
func (c *ClickHouse) HTTPURL() string { return httpURL(c.HTTPPort) }

// NativeAddr is host:port of the native TCP protocol.
func (c *ClickHouse) NativeAddr() string { return hostPort(c.TCPPort) }

func (c *ClickHouse) configPath() string { return filepath.Join(c.Dir, "config.xml") }

func (c *ClickHouse) ping(ctx context.Context) error { return pingClickHouse(ctx, c.HTTPURL()) }

// failure is the last error ClickHouse logged, without stack trace lines.
func (c *ClickHouse) failure() string {
	return lastLine(filepath.Join(c.Dir, "log", "error.log"), func(line string) bool {
		return strings.Contains(line, "<Error>") || strings.Contains(line, "Exception")
	})
}

func (c *ClickHouse) writeConfig() error {
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("clickhouse dir: %w", err)
		}
	}
	var b strings.Builder
	if err := configXML.Execute(&b, c); err != nil {
		return fmt.Errorf("clickhouse config.xml: %w", err)
	}
	if err := os.WriteFile(c.configPath(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("clickhouse config.xml: %w", err)
	}
	_, err := writeUsers(c.Dir, c.Analyst)
	return err
}

var templateFuncs = template.FuncMap{"xml": func(s string) (string, error) {
	var b strings.Builder
	err := xml.EscapeText(&b, []byte(s))
	return b.String(), err
}}

// The config works on 18.16.1 and on modern servers. Unknown settings in a
// profile stop 18.16.1 from starting (max_partitions_per_insert_block, for
// one), so add settings only after checking there.
var configXML = template.Must(template.New("config.xml").Funcs(templateFuncs).Parse(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{{xml .Dir}}/log/server.log</log>
    <errorlog>{{xml .Dir}}/log/error.log</errorlog>
    <console>0</console>
  </logger>
  <http_port>{{.HTTPPort}}</http_port>
  <tcp_port>{{.TCPPort}}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{{xml .Dir}}/data/</path>
  <tmp_path>{{xml .Dir}}/tmp/</tmp_path>
  <user_files_path>{{xml .Dir}}/user_files/</user_files_path>
  <format_schema_path>{{xml .Dir}}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <!-- The server's own work, Kafka engine consumers included, runs with the
       kafka_engine profile (users.xml). -->
  <system_profile>kafka_engine</system_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
  <timezone>UTC</timezone>
  <!-- Kafka engine tables must see messages produced before they joined. -->
  <kafka><auto_offset_reset>earliest</auto_offset_reset></kafka>
{{- with .Node}}
  <!-- One node of the local cluster {{.Cluster}}: replicated tables and
       ON CLUSTER DDL through ZooKeeper, the shards in remote_servers. -->
  <interserver_http_port>{{.InterserverPort}}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{{.ZooKeeperPort}}</port></node>
    <session_timeout_ms>{{.SessionTimeoutMs}}</session_timeout_ms>
  </zookeeper>
  <macros>
    <cluster>{{.Cluster}}</cluster>
    <shard>{{.ShardMacro}}</shard>
    <replica>{{.Name}}</replica>
  </macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <remote_servers>
    <{{.Cluster}}>
{{- range .Shards}}
      <shard>
        <internal_replication>true</internal_replication>
{{- range .}}
        <replica><host>127.0.0.1</host><port>{{.}}</port></replica>
{{- end}}
      </shard>
{{- end}}
    </{{.Cluster}}>
  </remote_servers>
{{- end}}
</yandex>
`))

// stream_flush_interval_ms: Kafka engine tables land a block every 0.5 s
// instead of every 7.5 s.
//
// kafka_engine is the system profile, the settings of the server's own
// work. On 18.16 a Kafka engine table reads with them, and no input format
// there takes a message as it is: kafkaengine reads each message as the one
// field of a CSV row whose delimiter is DEL (0x7f), with quoting off, so that
// JSON of any shape is a single String; a row that still fails (a message
// holding DEL) is skipped instead of blocking its partition. Sessions start
// from the system profile's values, so the default profile sets the CSV
// settings back for users.
//
// The analyst user (analyst.go) has a profile and a quota of its own;
// 18.16 checks password_sha256_hex, and allow_databases leaves system
// readable (system.tables and system.columns list only the allowed
// databases' tables).
var usersXML = template.Must(template.New("users.xml").Funcs(templateFuncs).Parse(`<?xml version="1.0"?>
<!-- Written by clickagg (services/clickhouse.go); rewritten by every
     "clickagg services up". -->
<yandex>
  <profiles>
    <default>
      <stream_flush_interval_ms>500</stream_flush_interval_ms>
      <format_csv_delimiter>,</format_csv_delimiter>
      <format_csv_allow_single_quotes>1</format_csv_allow_single_quotes>
      <format_csv_allow_double_quotes>1</format_csv_allow_double_quotes>
      <input_format_allow_errors_num>0</input_format_allow_errors_num>
    </default>
    <kafka_engine>
      <stream_flush_interval_ms>500</stream_flush_interval_ms>
      <format_csv_delimiter>&#127;</format_csv_delimiter>
      <format_csv_allow_single_quotes>0</format_csv_allow_single_quotes>
      <format_csv_allow_double_quotes>0</format_csv_allow_double_quotes>
      <input_format_allow_errors_num>1000000000</input_format_allow_errors_num>
    </kafka_engine>
    <analyst>
{{- range .Profile}}
      <{{.Name}}>{{xml .Value}}</{{.Name}}>
{{- end}}
    </analyst>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
    <analyst>
      <password_sha256_hex>{{.PasswordSHA256}}</password_sha256_hex>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>analyst</profile>
      <quota>analyst</quota>
{{- if .Databases}}
      <allow_databases>
{{- range .Databases}}
        <database>{{xml .}}</database>
{{- end}}
      </allow_databases>
{{- end}}
    </analyst>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
        <read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
    <analyst>
      <interval>
        <duration>{{.QuotaInterval}}</duration>
{{- range .Quota}}
        <{{.Name}}>{{xml .Value}}</{{.Name}}>
{{- end}}
      </interval>
    </analyst>
  </quotas>
</yandex>
`))

func httpURL(port int) string  { return "http://" + hostPort(port) }
func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func pingClickHouse(ctx context.Context, baseURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/ping", nil)
	if err != nil {
		return err
	}
	// An idle keep-alive connection holds up the server's shutdown for its
	// keep_alive_timeout (10 s).
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "Ok." {
		return fmt.Errorf("ping: %s: %q", resp.Status, body)
	}
	return nil
}

// Query runs one statement through ClickHouse's HTTP interface in database
// (empty: the server's default) and returns the response body. It is for
// setup and tests; the application has its own client.
func Query(ctx context.Context, baseURL, database, query string) (string, error) {
	return queryAs(ctx, baseURL, "", "", database, query)
}

// queryAs is Query as user (empty: the default user, without password).
func queryAs(ctx context.Context, baseURL, user, password, database, query string) (string, error) {
	u := baseURL + "/"
	if database != "" {
		u += "?database=" + url.QueryEscape(database)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(query))
	if err != nil {
		return "", fmt.Errorf("clickhouse query: %w", err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	req.Close = true // see pingClickHouse
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("clickhouse query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("clickhouse query: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhouse query: %s", firstLine(string(body)))
	}
	return string(body), nil
}

// firstLine keeps the message of a ClickHouse error, not its stack trace.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "empty error response"
	}
	return s
}
