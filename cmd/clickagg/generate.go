package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/clickagg/clickagg/generator"
)

// genFlags are the generator flags shared by generate and serve.
type genFlags struct {
	src  generator.Options
	seed int
	load generator.LoadOptions
}

func (g *genFlags) register(f *flags, ratePrefix string, defRate int) {
	f.int(&g.load.Rate, ratePrefix+"rate", "CLICKAGG_GENERATE_RATE", defRate, "events per second offered (negative: as fast as accepted)")
	f.dur(&g.load.Duration, ratePrefix+"duration", "CLICKAGG_GENERATE_DURATION", 0, "how long to send (0: until interrupted)")
	f.int(&g.src.Ads, ratePrefix+"ads", "CLICKAGG_GENERATE_ADS", 1000, "distinct ads (Zipf popularity)")
	f.int(&g.seed, ratePrefix+"seed", "CLICKAGG_GENERATE_SEED", 1, "random seed; the same seed gives the same events")
	f.Float64Var(&g.src.LateShare, ratePrefix+"late-share", 0.01, "share of events 1 min to 3 h late")
	f.Float64Var(&g.src.DuplicateShare, ratePrefix+"duplicate-share", 0.001, "share of events resent with the same event_id")
	f.int(&g.load.Batch, ratePrefix+"batch", "CLICKAGG_GENERATE_BATCH", 500, "events per request")
	f.int(&g.load.Concurrency, ratePrefix+"concurrency", "CLICKAGG_GENERATE_CONCURRENCY", 4, "requests in flight")
	f.bool(&g.load.Gzip, ratePrefix+"gzip", "CLICKAGG_GENERATE_GZIP", false, "gzip request bodies")
}

// options returns the generator options once the flags are parsed.
func (g *genFlags) options() (generator.Options, generator.LoadOptions) {
	src := g.src
	src.Seed = uint64(g.seed)
	src.Now = time.Now // live traffic: event time is now, minus lateness
	// A new prefix per run: a second run with the same seed is new traffic,
	// not a resend of the first (which the collector would count once).
	src.IDPrefix = strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	if src.LateShare == 0 {
		src.LateShare = -1
	}
	if src.DuplicateShare == 0 {
		src.DuplicateShare = -1
	}
	return src, g.load
}

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("generate", "[flags]", stderr)
	var g genFlags
	g.register(f, "", 5000)
	var listen string
	f.listen(&listen)
	f.str(&g.load.Target, "target", "CLICKAGG_GENERATE_TARGET", "", "collector base URL (default http://<listen>)")
	if err := f.parse(args, 0); err != nil {
		return err
	}
	src, load := g.options()
	if load.Target == "" {
		load.Target = "http://" + listen
	}
	load.Progress = stderr
	rep, err := generator.Load(ctx, generator.New(src), load)
	fmt.Fprintln(stdout, rep.String())
	if ctx.Err() != nil {
		return nil // interrupted on purpose
	}
	return err
}
