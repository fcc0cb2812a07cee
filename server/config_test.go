package server_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/server"
)

// Fields whose negative or zero values mean something, so Validate takes
// them. Every other number in Config is a size, count or duration that must
// be positive; a new field is checked without being listed here.
var (
	negativeOK = map[string]string{
		"Ingest.MaxRetries":              "-1: no retries",
		"Generate.Load.Rate":             "negative: as fast as accepted",
		"Generate.Source.LateShare":      "negative: none",
		"Generate.Source.DuplicateShare": "negative: none",
		"Generate.Source.BadShare":       "negative: none",
	}
	zeroOK = map[string]string{
		"Redis.DB":                       "database 0",
		"Cache.LocalTTL":                 "0: no in-process tier",
		"Auth.IngestRate":                "0: no limit",
		"Auth.IngestBurst":               "0: the rate",
		"Auth.MaxConcurrent":             "0: no limit",
		"Kafka.RestartAfter":             "0: never",
		"Kafka.VerifyEvery":              "0: never",
		"Generate.Load.Duration":         "0: until stopped",
		"Generate.Load.Rate":             "0: no generator",
		"Generate.Source.LateShare":      "0: the default share",
		"Generate.Source.DuplicateShare": "0: the default share",
		"Generate.Source.BadShare":       "0: the default share",
	}
)

// numbers lists the paths of every int, int64, float64 and Duration field
// under v.
func numbers(v reflect.Value, prefix string, out *[]string) {
	for i := range v.NumField() {
		sf := v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		switch v.Field(i).Kind() {
		case reflect.Struct:
			if sf.Type != reflect.TypeOf(time.Time{}) {
				numbers(v.Field(i), prefix+sf.Name+".", out)
			}
		case reflect.Int, reflect.Int64, reflect.Float64:
			*out = append(*out, prefix+sf.Name)
		}
	}
}

// set stores n in the field at path of c.
func set(c *server.Config, path string, n int64) {
	f := reflect.ValueOf(c).Elem()
	for name := range strings.SplitSeq(path, ".") {
		f = f.FieldByName(name)
	}
	if f.Kind() == reflect.Float64 {
		f.SetFloat(float64(n))
	} else {
		f.SetInt(n)
	}
}

func TestDefaultConfigValid(t *testing.T) {
	c := server.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Generate.Load.Rate = 100
	if err := c.Validate(); err != nil {
		t.Fatalf("with the generator on: %v", err)
	}
}

// TestValidateNamesTheField: every size, count and duration of Config,
// set to a negative value or zero, is refused with its path named.
func TestValidateNamesTheField(t *testing.T) {
	var paths []string
	numbers(reflect.ValueOf(server.DefaultConfig()), "", &paths)
	if len(paths) < 40 {
		t.Fatalf("only %d number fields found: %v", len(paths), paths)
	}
	for _, path := range paths {
		for _, n := range []int64{-1, 0} {
			c := server.DefaultConfig()
			c.Generate.Load.Rate = 100 // the generator's settings are checked only when it runs
			set(&c, path, n)
			err := c.Validate()
			_, okNeg := negativeOK[path]
			_, okZero := zeroOK[path]
			if n < 0 && okNeg || n == 0 && okZero {
				if err != nil {
					t.Errorf("%s = %d: %v, want it accepted", path, n, err)
				}
				continue
			}
			var ce *clickagg.ConfigError
			if !errors.As(err, &ce) || ce.Field != path {
				t.Errorf("%s = %d: %v, want a ConfigError naming %s", path, n, err, path)
			}
		}
	}
}

func TestValidateCombinations(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		change      func(*server.Config)
	}{
		{"buffer below a block", "Ingest.MaxBufferedRows", func(c *server.Config) { c.Ingest.MaxBufferedRows = c.Ingest.MaxRows - 1 }},
		{"inflight below the largest request", "Collector.MaxInflightBytes", func(c *server.Config) { c.Collector.MaxBodyBytes = int(c.Collector.MaxInflightBytes) }},
		{"lookback inside the settled minutes", "Reconcile.Lookback", func(c *server.Config) { c.Reconcile.Lookback = c.Reconcile.Settle }},
		{"listen not host:port", "Listen", func(c *server.Config) { c.Listen = "8080" }},
		{"debug listen not host:port", "DebugListen", func(c *server.Config) { c.DebugListen = "localhost" }},
		{"clickhouse URL", "ClickHouse.HTTP", func(c *server.Config) { c.ClickHouse.HTTP = "127.0.0.1:8123" }},
		{"redis address", "Redis.Addr", func(c *server.Config) { c.Redis.Addr = "redis" }},
		{"dead letters kept less than a day", "DeadLetterRetention", func(c *server.Config) { c.DeadLetterRetention = time.Hour }},
		{"too many inserts at once", "Ingest.MaxInflight", func(c *server.Config) { c.Ingest.MaxInflight = 65 }},
		{"unknown compression", "ClickHouseCompression", func(c *server.Config) { c.ClickHouseCompression = "gzip" }},
		{"empty compression", "ClickHouseCompression", func(c *server.Config) { c.ClickHouseCompression = "" }},
		{"zookeeper not host:port", "ZooKeeper", func(c *server.Config) { c.ZooKeeper = "zk1:2181,zk2" }},
		{"several instances on a cluster without zookeeper", "ZooKeeper", func(c *server.Config) {
			c.SharedDedup, c.ClickHouse.Cluster, c.ClickHouse.Shards = true, "clickagg", [][]string{{"http://ch:8123"}}
		}},
	} {
		c := server.DefaultConfig()
		tc.change(&c)
		var ce *clickagg.ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != tc.field || ce.Want == "" {
			t.Errorf("%s: %v, want a ConfigError naming %s", tc.name, err, tc.field)
		}
	}
}

// TestCompressInserts: auto leaves blocks uncompressed only when every URL
// the ingest posts to is on a loopback host; lz4 and none are as said.
func TestCompressInserts(t *testing.T) {
	for _, tc := range []struct {
		setting, http string
		shards        [][]string // a cluster when not nil
		want          bool
	}{
		{"auto", "http://127.0.0.1:8123", nil, false},
		{"auto", "http://127.1.2.3:8123", nil, false},
		{"auto", "http://localhost:8123", nil, false},
		{"auto", "https://LocalHost.:8443", nil, false},
		{"auto", "http://[::1]:8123", nil, false},
		{"auto", "http://[::ffff:127.0.0.1]:8123", nil, false},
		{"auto", "http://clickhouse:8123", nil, true},
		{"auto", "http://10.0.0.5:8123", nil, true},
		{"auto", "http://128.0.0.1:8123", nil, true},
		{"auto", "http://[::2]:8123", nil, true},
		{"auto", "http://localhost.example.com:8123", nil, true},
		{"auto", "http://user@127.0.0.1.nip.io:8123", nil, true},
		{"auto", "http://[::1", nil, true}, // unparsable: compress, the safe side
		{"lz4", "http://127.0.0.1:8123", nil, true},
		{"none", "http://clickhouse:8123", nil, false},
		// A cluster posts to its shards' URLs only, not to ClickHouse.HTTP.
		{"auto", "http://clickhouse:8123", [][]string{{"http://127.0.0.1:8123", "http://127.0.0.2:8123"}, {"http://localhost:8124"}}, false},
		{"auto", "http://127.0.0.1:8123", [][]string{{"http://127.0.0.1:8123"}, {"http://127.0.0.1:8124", "http://ch2:8123"}}, true},
		{"none", "http://127.0.0.1:8123", [][]string{{"http://ch1:8123"}, {"http://ch2:8123"}}, false},
	} {
		c := server.DefaultConfig()
		c.ClickHouseCompression, c.ClickHouse.HTTP = tc.setting, tc.http
		if tc.shards != nil {
			c.ClickHouse.Cluster, c.ClickHouse.Shards = "clickagg", tc.shards
		}
		if got := c.CompressInserts(); got != tc.want {
			t.Errorf("%s, %s, shards %v: compress %v, want %v", tc.setting, tc.http, tc.shards, got, tc.want)
		}
	}
	if server.DefaultConfig().ClickHouseCompression != server.CompressionAuto {
		t.Errorf("default compression %q, want auto", server.DefaultConfig().ClickHouseCompression)
	}
}
