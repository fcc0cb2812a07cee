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

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("migrate", "up | down [N] | version | force V", stderr)
	var o chclient.Options
	f.clickhouse(&o)
	var yes bool
	f.BoolVar(&yes, "yes", false, "confirm 'down' without N, which drops every clickagg table and its data")
	if err := f.parse(args, 2); err != nil {
		return err
	}
	if len(f.pos) == 0 {
		f.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	m, err := schema.NewMigrator(ctx, o)
	if err != nil {
		return err
	}
	defer m.Close()
	arg := f.arg(1)
	switch f.arg(0) {
	case "up":
		err = m.Up()
	case "down":
		if arg != "" {
			n, perr := strconv.Atoi(arg)
			if perr != nil || n <= 0 {
				return fmt.Errorf("down %q: want a positive number of steps", arg)
			}
			err = m.Steps(-n)
		} else if !yes {
			return fmt.Errorf("down reverts every migration and drops all data in %s; pass --yes, or a number of steps", o.Database)
		} else {
			err = m.Down()
		}
	case "version":
	case "force":
		v, perr := strconv.Atoi(arg)
		if perr != nil {
			return fmt.Errorf("force %q: want a version number", arg)
		}
		err = m.Force(v)
	default:
		f.Usage()
		return errUsage
	}
	if err != nil {
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
