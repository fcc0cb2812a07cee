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
	f.v(&o.Shards, "shards", "CLICKAGG_SHARDS", "up: a cluster of this many shards (with ZooKeeper) instead of one server; 0: one server, or the cluster the directory holds")
	f.v(&o.Replicas, "replicas", "CLICKAGG_REPLICAS", "up: replicas per shard of the cluster (with --shards)")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if o.Shards < 0 || o.Replicas < 0 || o.Shards*max(o.Replicas, 1) > 16 || o.Replicas > 0 && o.Shards == 0 {
			return usagef("--shards %d --replicas %d: want 1 to 16 nodes in all, --replicas only with --shards", o.Shards, o.Replicas)
		}
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
			// Everything the tests need: the cluster's ZooKeeper and the
			// console's browser included.
			if err := services.Install(ctx, stderr, true); err != nil {
				return err
			}
			return services.InstallPackages(ctx, stderr, services.BrowserPackage)
		default:
			return usagef("want up, down, status or install, not %q", f.arg(0))
		}
		return nil
	}
}
