package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/schema"
)

func setupMigrate(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	var o chclient.Options
	f.root = &o
	f.clickhouse(&o)
	var yes bool
	f.v(&yes, "yes", "", "confirm 'down' without N, which drops every clickagg table and its data")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if err := f.check(o.Validate()); err != nil {
			return err
		}
		step := func(m *schema.Migrator) error { return nil } // version
		arg := f.arg(1)
		switch f.arg(0) {
		case "up":
			step = (*schema.Migrator).Up
		case "down":
			switch {
			case arg != "":
				n, err := strconv.Atoi(arg)
				if err != nil || n <= 0 {
					return usagef("down %q: want a positive number of steps", arg)
				}
				step = func(m *schema.Migrator) error { return m.Steps(-n) }
			case !yes:
				return usagef("down reverts every migration and drops all data in %s; pass --yes, or a number of steps", o.Database)
			default:
				step = (*schema.Migrator).Down
			}
		case "version":
		case "force":
			v, err := strconv.Atoi(arg)
			if err != nil {
				return usagef("force %q: want a version number", arg)
			}
			step = func(m *schema.Migrator) error { return m.Force(v) }
		default:
			return usagef("want up, down [N], version or force V, not %q", f.arg(0))
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		m, err := schema.NewMigrator(ctx, o)
		if err != nil {
			return err
		}
		defer m.Close()
		if err := step(m); err != nil {
			return err
		}
		v, dirty, err := m.Version()
		if err != nil {
			return err
		}
		latest, _ := schema.Latest()
		fmt.Fprintf(stdout, "version=%d latest=%d dirty=%v database=%s\n", v, latest, dirty, o.Database)
		return nil
	}
}
