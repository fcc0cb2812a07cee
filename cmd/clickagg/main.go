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

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "run the collector and query API (optionally migrating and generating traffic)", runServe},
	{"migrate", "apply or revert the ClickHouse schema: up, down, version, force", runMigrate},
	{"generate", "send realistic generated ad traffic to a collector", runGenerate},
	{"services", "local ClickHouse and Redis without Docker: up, down, status, install", runServices},
	{"reconcile", "compare the aggregates with raw events over a range; --fix corrects them", runReconcile},
	{"replay", "rebuild the aggregates of a range from raw events", runReplay},
	{"kafka", "let ClickHouse consume a Kafka topic into the same tables: enable, disable, status", runKafka},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: clickagg <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'clickagg <command> --help' for its flags. Every flag has an environment")
	fmt.Fprintln(w, "variable (shown in the help); addresses default to the services started by")
	fmt.Fprintln(w, "'clickagg services up' in ./.local, then to local default ports.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			}
			fmt.Fprintf(stderr, "clickagg %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "clickagg: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// errUsage marks an error already explained with the command's usage.
var errUsage = errors.New("usage")
