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

func newRangeCommand(f *flags) *rangeCommand {
	c := &rangeCommand{f: f, maxRows: 50}
	f.root = &c.ch
	f.clickhouse(&c.ch)
	f.v(&c.from, "from", "", "start of the range, RFC 3339 on a whole minute, e.g. 2026-11-22T10:00:00Z (inclusive)")
	f.v(&c.to, "to", "", "end of the range, RFC 3339 on a whole minute (exclusive)")
	f.v(&c.maxRows, "max-rows", "", "differing rows shown per table")
	f.v(&c.json, "json", "", "print the report as JSON")
	return c
}

// rng checks the settings and the range; a bad range is a usage error.
func (c *rangeCommand) rng() (agg.Range, error) {
	if err := c.f.check(c.ch.Validate()); err != nil {
		return agg.Range{}, err
	}
	rng, err := reconcile.ParseRange(c.from, c.to)
	if err != nil {
		return rng, &usageError{err.Error()}
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
	r, err := reconcile.Open(ctx, conn, c.ch, reconcile.Options{MaxRows: keep})
	if err != nil {
		return reconcile.Report{}, err
	}
	defer r.Close()
	rep, err := do(r)
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

// setupReconcile: the command exits 1 while differences remain unfixed, so
// that cron can alert on it.
func setupReconcile(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	c := newRangeCommand(f)
	var fix bool
	f.v(&fix, "fix", "", "write corrections for the differences found")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		rng, err := c.rng()
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
}

func setupReplay(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	c := newRangeCommand(f)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		rng, err := c.rng()
		if err != nil {
			return err
		}
		_, err = c.run(ctx, stdout, func(r *reconcile.Reconciler) (reconcile.Report, error) { return r.Replay(ctx, rng) })
		return err
	}
}
