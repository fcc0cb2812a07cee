package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	agg "github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/reconcile"
)

// rangeCommand is what reconcile and replay share: connection flags, the
// range and the output.
type rangeCommand struct {
	f        *flags
	ch       chclient.Options
	from, to string
	maxRows  int
	json     bool
}

func newRangeCommand(name, synopsis string, stderr io.Writer) *rangeCommand {
	c := &rangeCommand{f: newFlags(name, synopsis, stderr)}
	c.f.clickhouse(&c.ch)
	c.f.StringVar(&c.from, "from", "", "start of the range, RFC 3339 on a whole minute, e.g. 2026-11-22T10:00:00Z (inclusive)")
	c.f.StringVar(&c.to, "to", "", "end of the range, RFC 3339 on a whole minute (exclusive)")
	c.f.IntVar(&c.maxRows, "max-rows", 50, "differing rows shown per table")
	c.f.BoolVar(&c.json, "json", false, "print the report as JSON")
	return c
}

// parse reads the flags and the range; a bad range is a usage error.
func (c *rangeCommand) parse(args []string) (agg.Range, error) {
	if err := c.f.parse(args, 0); err != nil {
		return agg.Range{}, err
	}
	rng, err := reconcile.ParseRange(c.from, c.to)
	if err != nil {
		fmt.Fprintf(c.f.Output(), "%v\n\n", err)
		c.f.Usage()
		return rng, errUsage
	}
	return rng, nil
}

// run connects, calls do and prints its report, also when do failed.
func (c *rangeCommand) run(ctx context.Context, stdout io.Writer, do func(*reconcile.Reconciler) (reconcile.Report, error)) (reconcile.Report, error) {
	conn, err := chclient.OpenNative(ctx, c.ch)
	if err != nil {
		return reconcile.Report{}, err
	}
	defer conn.Close()
	keep := c.maxRows
	if keep <= 0 {
		keep = -1 // none; 0 would mean the default
	}
	rep, err := do(reconcile.New(conn, reconcile.Options{MaxRows: keep}))
	var perr error
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		perr = enc.Encode(rep)
	} else {
		perr = rep.WriteSummary(stdout, c.maxRows)
	}
	if err != nil {
		return rep, err
	}
	return rep, perr
}

// runReconcile exits 1 while differences remain unfixed, so that cron can
// alert on it.
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newRangeCommand("reconcile", "--from RFC3339 --to RFC3339 [--fix] [--json]", stderr)
	var fix bool
	c.f.BoolVar(&fix, "fix", false, "write corrections for the differences found")
	rng, err := c.parse(args)
	if err != nil {
		return err
	}
	rep, err := c.run(ctx, stdout, func(r *reconcile.Reconciler) (reconcile.Report, error) { return r.Run(ctx, rng, fix) })
	if err != nil {
		return err
	}
	if rep.Unfixed() {
		return fmt.Errorf("%d differing rows left as they are (--fix corrects them)", rep.Differences())
	}
	return nil
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newRangeCommand("replay", "--from RFC3339 --to RFC3339 [--json]", stderr)
	rng, err := c.parse(args)
	if err != nil {
		return err
	}
	_, err = c.run(ctx, stdout, func(r *reconcile.Reconciler) (reconcile.Report, error) { return r.Replay(ctx, rng) })
	return err
}
