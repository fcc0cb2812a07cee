// Command clickagg ingests ad events into ClickHouse, keeps per-minute and
// per-day aggregates there, and serves them over HTTP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand: setup registers its flags and returns what
// runs once they are parsed.
type command struct {
	name, synopsis, summary string
	maxArgs                 int // positional arguments at most
	setup                   func(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error
}

// commands is the list, built once: the README test walks their flags.
func commands() []command {
	return []command{
		{"serve", "[flags]", "run the collector and query API (optionally migrating and generating traffic)", 0, setupServe},
		{"migrate", "up | down [N] | version | force V", "apply or revert the ClickHouse schema: up, down, version, force", 2, setupMigrate},
		{"generate", "[flags]", "send realistic generated ad traffic to a collector", 0, setupGenerate},
		{"services", "up | down | status | install", "local ClickHouse and Redis without Docker: up, down, status, install", 1, setupServices},
		{"reconcile", "--from RFC3339 --to RFC3339 [--fix] [--json]", "compare the aggregates with raw events over a range; --fix corrects them", 0, setupReconcile},
		{"replay", "--from RFC3339 --to RFC3339 [--json]", "rebuild the aggregates of a range from raw events", 0, setupReplay},
		{"kafka", "enable | disable | status | verify", "let ClickHouse consume a Kafka topic into the same tables: enable, disable, status", 1, setupKafka},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: clickagg <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'clickagg <command> --help' for its flags. Every setting flag has an")
	fmt.Fprintln(w, "environment variable (shown in the help); addresses default to the services")
	fmt.Fprintln(w, "started by 'clickagg services up' in ./.local, then to local default ports.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program: exit status 0 on success, 2 for a command line
// or environment it cannot take, 1 for a failure, each explained in one
// line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		f := newFlags(c.name, c.synopsis)
		body := c.setup(f)
		err := f.parse(args[1:], c.maxArgs)
		if err == nil {
			err = body(ctx, stdout, stderr)
		}
		var ue *usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			f.usage(stderr)
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "clickagg %s: %v\nRun 'clickagg %s --help' for its flags.\n", c.name, err, c.name)
			return 2
		}
		fmt.Fprintf(stderr, "clickagg %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "clickagg: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}
