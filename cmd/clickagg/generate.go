package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/kafka"
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
	if g.load.Token == "" {
		// From the environment only, as serve's tokens.
		g.load.Token = os.Getenv("CLICKAGG_GENERATE_TOKEN")
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
	var brokers, topic string
	f.str(&brokers, "kafka", "CLICKAGG_GENERATE_KAFKA", "", "produce to these Kafka brokers (host:port[,...]) instead of posting to the collector")
	f.str(&topic, "topic", "CLICKAGG_KAFKA_TOPIC", "ad-events", "Kafka topic, with --kafka")
	if err := f.parse(args, 0); err != nil {
		return err
	}
	src, load := g.options()
	if brokers != "" {
		return generateKafka(ctx, generator.New(src), brokers, topic, load, stdout, stderr)
	}
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

// generateKafka produces the generated events to a topic, one per message,
// keyed by ad_id so that an ad's events keep their order in one partition.
func generateKafka(ctx context.Context, src *generator.Source, brokers, topic string, load generator.LoadOptions, stdout, stderr io.Writer) error {
	kc, err := kafka.Dial(brokers)
	if err != nil {
		return err
	}
	defer kc.Close()
	o := kafka.ProduceOptions{Topic: topic, Duration: load.Duration, Progress: stderr}
	if load.Rate > 0 {
		o.Pace = generator.NewPacer(load.Rate).Wait
	}
	rep, err := kc.Produce(ctx, src.AppendNext, adID, o)
	fmt.Fprintln(stdout, rep.String())
	if ctx.Err() != nil {
		return nil // interrupted on purpose
	}
	return err
}

// adID is the ad_id of a generated event, which writes it as a string.
func adID(ev []byte) []byte {
	const key = `"ad_id":"`
	i := bytes.Index(ev, []byte(key))
	if i < 0 {
		return nil
	}
	v := ev[i+len(key):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return nil
}
