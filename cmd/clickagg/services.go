package main

import (
	"context"
	"fmt"
	"io"

	"github.com/clickagg/clickagg/services"
)

func setupServices(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	o := services.Options{Dir: ".local"}
	f.v(&o.Dir, "dir", "CLICKAGG_DATA_DIR", "project-local data directory of the services")
	f.v(&o.NoInstall, "no-install", "CLICKAGG_NO_INSTALL", "fail instead of installing missing Debian packages")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		o.Log = stderr
		switch f.arg(0) {
		case "up":
			st, err := services.Up(ctx, o)
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, st.Env())
		case "down":
			return services.Down(ctx, o)
		case "status":
			st, err := services.Read(o)
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, st.Env())
		case "install":
			return services.Install(ctx, stderr)
		default:
			return usagef("want up, down, status or install, not %q", f.arg(0))
		}
		return nil
	}
}
