package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/server"
	"github.com/clickagg/clickagg/services"
)

// flags is a command's FlagSet. A value comes from the command line, else
// from the flag's environment variable, else from the local services'
// state file (addresses), else from the default, which is whatever the
// registered field holds (the packages' exported defaults). Every value is
// parsed with an error that names the flag or variable and the accepted
// form.
type flags struct {
	fs       *flag.FlagSet
	name     string
	synopsis string
	local    *services.Status // nil when `services up` never ran here
	pos      []string         // positional arguments, wherever they stood
	after    []func() error   // run by parse: values that need files or checks
	env      map[string]string
	order    []string // flag names in registration order

	// fields maps the Go path of a validated struct's field (as a
	// *clickagg.ConfigError names it) to its flag, once root is set.
	root   any
	fields map[string]string
}

func newFlags(name, synopsis string) *flags {
	fs := flag.NewFlagSet("clickagg "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed on --help only
	f := &flags{fs: fs, name: name, synopsis: synopsis, env: map[string]string{}, fields: map[string]string{}}
	if st, err := services.Read(services.Options{Dir: os.Getenv("CLICKAGG_DATA_DIR")}); err == nil {
		f.local = &st
	}
	return f
}

// usageError is a command line or environment the command cannot take: one
// line, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

var singleDash = regexp.MustCompile(`(\s)-(\w)`)

// value is a flag.Value of one of the kinds flags take, with the accepted
// form in its errors.
type value struct {
	p    any // *string, *int, *int64 (a size given in MiB, kept in bytes), *uint64, *float64, *bool, *time.Duration
	form string
}

func (v *value) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	switch p := v.p.(type) {
	case *string:
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p>>20, 10)
	case *uint64:
		return strconv.FormatUint(*p, 10)
	case *float64:
		return strconv.FormatFloat(*p, 'g', -1, 64)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	case *[][]string:
		return chclient.FormatShards(*p)
	}
	return fmt.Sprint(v.p)
}

func (v *value) Set(s string) error {
	var err error
	switch p := v.p.(type) {
	case *string:
		*p = s
	case *int:
		*p, err = strconv.Atoi(s)
	case *int64: // MiB given, bytes kept
		var n int64
		if n, err = strconv.ParseInt(s, 10, 64); err == nil && (n < 0 || n > 1<<40) {
			err = errors.New("out of range")
		}
		*p = n << 20
	case *uint64:
		*p, err = strconv.ParseUint(s, 10, 64)
	case *float64:
		*p, err = strconv.ParseFloat(s, 64)
	case *bool:
		*p, err = strconv.ParseBool(s)
	case *time.Duration:
		*p, err = time.ParseDuration(s)
	case *[][]string:
		*p, err = chclient.ParseShards(s)
	}
	if err != nil {
		return errors.New("want " + v.form)
	}
	return nil
}

// IsBoolFlag lets a bool flag stand alone (--migrate).
func (v *value) IsBoolFlag() bool { _, ok := v.p.(*bool); return ok }

func formOf(p any) string {
	switch p.(type) {
	case *int:
		return "a whole number"
	case *int64:
		return "a whole number of MiB"
	case *uint64:
		return "a whole number, 0 or more"
	case *float64:
		return "a number"
	case *bool:
		return "true or false"
	case *time.Duration:
		return "a duration such as 250ms, 30s, 2h or 1h30m"
	case *[][]string:
		return "shards separated by spaces, each a comma-separated list of http(s):// URLs"
	}
	return "text"
}

// v registers flag name for the field p points to, read from environment
// variable env when env is not empty; its default is what *p holds now.
func (f *flags) v(p any, name, env, usage string) {
	if env != "" {
		usage += " [" + env + "]"
		f.env[name] = env
	}
	f.fs.Var(&value{p: p, form: formOf(p)}, name, usage)
	f.order = append(f.order, name)
	if f.root != nil {
		if path := fieldPath(f.root, p); path != "" {
			f.fields[path] = name
		}
	}
}

// parse parses args, allowing flags after positional arguments
// ("services up --no-install"), then the environment for the flags not
// given, and rejects more than max positionals.
func (f *flags) parse(args []string, max int) error {
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			// The flag package writes -name; the help and these messages, --name.
			return usagef("%s", singleDash.ReplaceAllString(err.Error(), "$1--$2"))
		}
		if f.fs.NArg() == 0 {
			break
		}
		f.pos = append(f.pos, f.fs.Arg(0))
		args = f.fs.Args()[1:]
	}
	if len(f.pos) > max {
		return usagef("unexpected arguments: %v", f.pos[max:])
	}
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	for _, name := range f.order {
		env := f.env[name]
		if env == "" || given[name] {
			continue
		}
		// An empty variable counts as unset, as compose files often leave them.
		if s := os.Getenv(env); s != "" {
			if err := f.fs.Set(name, s); err != nil {
				return usagef("%s=%q: %v", env, s, err)
			}
		}
	}
	for _, fn := range f.after {
		if err := fn(); err != nil {
			return &usageError{err.Error()}
		}
	}
	return nil
}

// check turns a *clickagg.ConfigError of the struct registered as root
// into a usage error naming the flag and its variable.
func (f *flags) check(err error) error {
	var ce *clickagg.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	name, ok := f.fields[ce.Field]
	if !ok {
		return &usageError{err.Error()}
	}
	where := "--" + name
	if env := f.env[name]; env != "" {
		where += " [" + env + "]"
	}
	return usagef("%s %s: want %s", where, f.fs.Lookup(name).Value.String(), ce.Want)
}

// usage prints the command's synopsis and flags, in the order they were
// registered (related flags stay together).
func (f *flags) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: clickagg %s %s\n\nFlags (environment variable in brackets):\n", f.name, f.synopsis)
	for _, name := range f.order {
		fl := f.fs.Lookup(name)
		v := fl.Value.(*value)
		kind := ""
		switch v.p.(type) {
		case *string:
			kind = " text"
		case *int, *uint64:
			kind = " int"
		case *int64:
			kind = " MiB"
		case *float64:
			kind = " number"
		case *time.Duration:
			kind = " duration"
		case *[][]string:
			kind = " shards"
		}
		def := ""
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0" {
			def = " (default " + fl.DefValue + ")"
		}
		fmt.Fprintf(w, "  --%s%s\n    \t%s%s\n", name, kind, fl.Usage, def)
	}
}

// arg is positional argument i, or "".
func (f *flags) arg(i int) string {
	if i < len(f.pos) {
		return f.pos[i]
	}
	return ""
}

// fieldPath is the path of the field p points to inside the struct root
// points to ("Ingest.MaxInflight"), or "" when it is not one of its fields.
func fieldPath(root, p any) string {
	target := reflect.ValueOf(p)
	var walk func(v reflect.Value, prefix string) string
	walk = func(v reflect.Value, prefix string) string {
		for i := range v.NumField() {
			fv, sf := v.Field(i), v.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			path := prefix + sf.Name
			if fv.Addr().Pointer() == target.Pointer() && fv.Addr().Type() == target.Type() {
				return path
			}
			if fv.Kind() == reflect.Struct {
				if found := walk(fv, path+"."); found != "" {
					return found
				}
			}
		}
		return ""
	}
	return walk(reflect.ValueOf(root).Elem(), "")
}

// clickhouse registers the ClickHouse connection flags.
func (f *flags) clickhouse(o *chclient.Options) {
	*o = o.WithDefaults()
	if f.local != nil {
		o.HTTP, o.Native, o.Database = f.local.ClickHouseHTTP, f.local.ClickHouseNative, f.local.Database
		if f.local.Cluster != "" {
			o.Native = f.local.NativeAddrs()
		}
	}
	f.v(&o.HTTP, "clickhouse-http", "CLICKAGG_CLICKHOUSE_HTTP", "ClickHouse HTTP interface URL (inserts)")
	f.v(&o.Native, "clickhouse-native", "CLICKAGG_CLICKHOUSE_NATIVE", "ClickHouse native protocol host:port (schema and queries); on a cluster host:port[,host:port...], tried in order (default: every node of the local services' cluster)")
	f.v(&o.Database, "clickhouse-database", "CLICKAGG_CLICKHOUSE_DATABASE", "ClickHouse database")
	f.v(&o.User, "clickhouse-user", "CLICKAGG_CLICKHOUSE_USER", "ClickHouse user (password: CLICKAGG_CLICKHOUSE_PASSWORD or CLICKAGG_CLICKHOUSE_PASSWORD_FILE)")
	if f.local != nil {
		o.Cluster = f.local.Cluster
	}
	f.v(&o.Cluster, "clickhouse-cluster", "CLICKAGG_CLICKHOUSE_CLUSTER", "the ClickHouse cluster (remote_servers) the database lives on; empty: one server (default: the local services' cluster, if they are one)")
	if f.local != nil && f.local.Cluster != "" {
		o.Shards = f.local.Shards()
	}
	f.v(&o.Shards, "clickhouse-shards", "CLICKAGG_CLICKHOUSE_SHARDS", "a cluster's HTTP interfaces for inserts: shards separated by spaces in remote_servers order, each shard's replicas by commas (default: the local services' cluster)")
	t := new(tlsFlags)
	t.register(f, "clickhouse", "CLICKAGG_CLICKHOUSE", "ClickHouse (the native port, e.g. 9440; inserts use TLS when --clickhouse-http is https://, with the same CA and certificate)")
	f.after = append(f.after, func() (err error) {
		// The password has no flag so that it never shows in a process list.
		if o.Password, err = envSecret("CLICKAGG_CLICKHOUSE_PASSWORD"); err != nil {
			return err
		}
		o.TLS, err = t.config()
		return err
	})
}

// redisAddr registers the Redis address flag.
func (f *flags) redisAddr(addr *string) {
	*addr = server.DefaultRedisAddr
	if f.local != nil {
		*addr = f.local.RedisAddr
	}
	f.v(addr, "redis-addr", "CLICKAGG_REDIS_ADDR", "Redis host:port (query cache)")
}

// listen is the API address flag.
func (f *flags) listen(addr *string) {
	*addr = server.DefaultListen
	f.v(addr, "listen", "CLICKAGG_LISTEN", "HTTP listen address of the collector and API")
}
