package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/kafka"
	"github.com/clickagg/clickagg/kafkaengine"
)

// genFlags registers the generator flags shared by generate and serve
// (serve prefixes them with "generate-"); src and load hold the defaults.
func genFlags(f *flags, src *generator.Options, load *generator.LoadOptions, prefix, rateUsage string) {
	f.v(&load.Rate, prefix+"rate", "CLICKAGG_GENERATE_RATE", rateUsage)
	f.v(&load.Duration, prefix+"duration", "CLICKAGG_GENERATE_DURATION", "how long to send (0: until interrupted)")
	f.v(&src.Ads, prefix+"ads", "CLICKAGG_GENERATE_ADS", "distinct ads (Zipf popularity)")
	f.v(&src.Seed, prefix+"seed", "CLICKAGG_GENERATE_SEED", "random seed; the same seed gives the same events")
	f.v(&src.LateShare, prefix+"late-share", "CLICKAGG_GENERATE_LATE_SHARE", "share of events 1 min to 3 h late (0: none)")
	f.v(&src.DuplicateShare, prefix+"duplicate-share", "CLICKAGG_GENERATE_DUPLICATE_SHARE", "share of events resent with the same event_id (0: none)")
	f.v(&src.BadShare, prefix+"bad-share", "CLICKAGG_GENERATE_BAD_SHARE", "share of malformed events, refused into dead_letters: a type or ad_format outside its enum, no ad_id, an unparsable or too-late ts (0 or negative: none)")
	f.v(&load.Batch, prefix+"batch", "CLICKAGG_GENERATE_BATCH", "events per request")
	f.v(&load.Concurrency, prefix+"concurrency", "CLICKAGG_GENERATE_CONCURRENCY", "requests in flight")
	f.v(&load.Gzip, prefix+"gzip", "CLICKAGG_GENERATE_GZIP", "gzip request bodies")
	f.after = append(f.after, func() error {
		// generator.Options takes 0 for its default and a negative share for none.
		for _, share := range []*float64{&src.LateShare, &src.DuplicateShare, &src.BadShare} {
			if *share == 0 {
				*share = -1
			}
		}
		return nil
	})
}

// generateConfig is what generate is told.
type generateConfig struct {
	Source generator.Options
	Load   generator.LoadOptions
}

func setupGenerate(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	c := generateConfig{Source: generator.Options{}.WithDefaults(), Load: generator.LoadOptions{}.WithDefaults()}
	f.root = &c
	genFlags(f, &c.Source, &c.Load, "", "events per second offered (negative: as fast as accepted)")
	var listen, brokers, topic string
	f.listen(&listen)
	f.v(&c.Load.Target, "target", "CLICKAGG_GENERATE_TARGET", "collector base URL (default http://<listen>)")
	f.v(&brokers, "kafka", "CLICKAGG_GENERATE_KAFKA", "produce to these Kafka brokers (host:port[,...]) instead of posting to the collector")
	topic = kafkaengine.DefaultTopic
	f.v(&topic, "topic", "CLICKAGG_KAFKA_TOPIC", "Kafka topic, with --kafka")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if err := f.check(clickagg.FirstError(
			clickagg.Within("Source", c.Source.Validate()),
			clickagg.Within("Load", c.Load.Validate()),
		)); err != nil {
			return err
		}
		src, load := c.Source, c.Load
		src.Now = time.Now // live traffic: event time is now, minus lateness
		// A new prefix per run: a second run with the same seed is new
		// traffic, not a resend of the first (which the collector would
		// count once).
		src.IDPrefix = strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
		// From the environment only, as serve's tokens.
		load.Token = os.Getenv("CLICKAGG_GENERATE_TOKEN")
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
}

// generateKafka produces the generated events to a topic, one per message,
// keyed by ad_id so that an ad's events keep their order in one partition.
// The malformed ones (--bad-share) go too, as a buggy producer's would: the
// drain refuses them into dead_letters; one without an ad_id has no key.
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
