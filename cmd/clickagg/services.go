package main

import (
	"context"
	"fmt"
	"io"

	"github.com/clickagg/clickagg/services"
)

func runServices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("services", "up | down | status | install", stderr)
	o := services.Options{Log: stderr}
	f.str(&o.Dir, "dir", "CLICKAGG_DATA_DIR", ".local", "project-local data directory of the services")
	f.bool(&o.NoInstall, "no-install", "CLICKAGG_NO_INSTALL", false, "fail instead of installing missing Debian packages")
	if err := f.parse(args, 1); err != nil {
		return err
	}
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
		f.Usage()
		return errUsage
	}
	return nil
}
