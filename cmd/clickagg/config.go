package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/services"
)

// flags is a FlagSet whose defaults come from environment variables, then
// from the local services' state file, then from built-in values.
type flags struct {
	*flag.FlagSet
	local *services.Status // nil when `services up` never ran here
	pos   []string         // positional arguments, wherever they stood
	after []func() error   // run by parse: values that need files or checks
}

func newFlags(name, synopsis string, stderr io.Writer) *flags {
	fs := flag.NewFlagSet("clickagg "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{FlagSet: fs}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: clickagg %s %s\n\nFlags (environment variable in brackets):\n", name, synopsis)
		fs.PrintDefaults()
	}
	dir := os.Getenv("CLICKAGG_DATA_DIR")
	if st, err := services.Read(services.Options{Dir: dir}); err == nil {
		f.local = &st
	}
	return f
}

func (f *flags) str(p *string, name, env, def, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	f.StringVar(p, name, def, usage+" ["+env+"]")
}

func (f *flags) int(p *int, name, env string, def int, usage string) {
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil {
		def = v
	}
	f.IntVar(p, name, def, usage+" ["+env+"]")
}

func (f *flags) dur(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, err := time.ParseDuration(os.Getenv(env)); err == nil {
		def = v
	}
	f.DurationVar(p, name, def, usage+" ["+env+"]")
}

func (f *flags) bool(p *bool, name, env string, def bool, usage string) {
	if v, err := strconv.ParseBool(os.Getenv(env)); err == nil {
		def = v
	}
	f.BoolVar(p, name, def, usage+" ["+env+"]")
}

// clickhouse registers the ClickHouse connection flags.
func (f *flags) clickhouse(o *chclient.Options) {
	def := chclient.Options{}.WithDefaults()
	if f.local != nil {
		def.HTTP, def.Native, def.Database = f.local.ClickHouseHTTP, f.local.ClickHouseNative, f.local.Database
	}
	f.str(&o.HTTP, "clickhouse-http", "CLICKAGG_CLICKHOUSE_HTTP", def.HTTP, "ClickHouse HTTP interface URL (inserts)")
	f.str(&o.Native, "clickhouse-native", "CLICKAGG_CLICKHOUSE_NATIVE", def.Native, "ClickHouse native protocol host:port (schema and queries)")
	f.str(&o.Database, "clickhouse-database", "CLICKAGG_CLICKHOUSE_DATABASE", def.Database, "ClickHouse database")
	f.str(&o.User, "clickhouse-user", "CLICKAGG_CLICKHOUSE_USER", def.User, "ClickHouse user (password: CLICKAGG_CLICKHOUSE_PASSWORD or CLICKAGG_CLICKHOUSE_PASSWORD_FILE)")
	t := new(tlsFlags)
	t.register(f, "clickhouse", "CLICKAGG_CLICKHOUSE", "ClickHouse (the native port, e.g. 9440; inserts use TLS when --clickhouse-http is https://, with the same CA and certificate)")
	f.after = append(f.after, func() (err error) {
		// The password has no flag so that it never shows in a process list.
		if o.Password, err = envSecret("CLICKAGG_CLICKHOUSE_PASSWORD"); err != nil {
			return err
		}
		if o.TLS, err = t.config(); err != nil {
			return fmt.Errorf("clickhouse %w", err)
		}
		return nil
	})
}

// redis registers the Redis address flag.
func (f *flags) redis(addr *string) {
	def := "127.0.0.1:6379"
	if f.local != nil {
		def = f.local.RedisAddr
	}
	f.str(addr, "redis-addr", "CLICKAGG_REDIS_ADDR", def, "Redis host:port (query cache)")
}

// listen is the API address flag.
func (f *flags) listen(addr *string) {
	f.str(addr, "listen", "CLICKAGG_LISTEN", "127.0.0.1:8080", "HTTP listen address of the collector and API")
}

// parse parses args, allowing flags after positional arguments
// ("services up --no-install"), and rejects more than max positionals.
func (f *flags) parse(args []string, max int) error {
	for {
		if err := f.Parse(args); err != nil {
			return err
		}
		if f.NArg() == 0 {
			break
		}
		f.pos = append(f.pos, f.Arg(0))
		args = f.Args()[1:]
	}
	if len(f.pos) > max {
		fmt.Fprintf(f.Output(), "unexpected arguments: %v\n", f.pos[max:])
		f.Usage()
		return errUsage
	}
	for _, fn := range f.after {
		if err := fn(); err != nil {
			return err
		}
	}
	return nil
}

// arg is positional argument i, or "".
func (f *flags) arg(i int) string {
	if i < len(f.pos) {
		return f.pos[i]
	}
	return ""
}
