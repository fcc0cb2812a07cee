package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // for --debug-listen only: it registers on DefaultServeMux
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	agg "github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/kafka"
	"github.com/clickagg/clickagg/kafkaengine"
	"github.com/clickagg/clickagg/prom"
	"github.com/clickagg/clickagg/queryapi"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/schema"
)

// serveConfig is everything serve is told by flags and environment.
type serveConfig struct {
	listen       string
	redis        redisConfig
	logs         logConfig
	sec          securityConfig
	ch           chclient.Options
	migrate      bool
	drain        time.Duration
	ingest       ingestor.Options
	co           collector.Options
	cacheOpts    cache.Options
	dedupOpts    dedup.Options
	janitor      janitorOptions
	recon        reconcile.SchedulerOptions
	noReconcile  bool
	kafkaBrokers string
	drainOpts    kafkaengine.DrainOptions
	verifyEvery  time.Duration
	kafkaStuck   time.Duration
	verifyWindow time.Duration
	debugListen  string
	inflightMiB  int
	g            genFlags
}

func (c *serveConfig) register(f *flags) {
	f.listen(&c.listen)
	f.clickhouse(&c.ch)
	c.redis.register(f)
	c.logs.register(f)
	c.sec.register(f)
	f.bool(&c.migrate, "migrate", "CLICKAGG_MIGRATE", false, "apply the embedded schema migrations before serving")
	f.dur(&c.drain, "shutdown-timeout", "CLICKAGG_SHUTDOWN_TIMEOUT", 30*time.Second, "on SIGTERM, how long to drain requests and flush buffered events")
	f.int(&c.ingest.MaxRows, "batch-rows", "CLICKAGG_BATCH_ROWS", 65536, "rows that make an INSERT block")
	f.dur(&c.ingest.Linger, "linger", "CLICKAGG_LINGER", 100*time.Millisecond, "longest wait before a partial block is sent")
	f.int(&c.ingest.MaxInflight, "inflight", "CLICKAGG_INFLIGHT", 2, "concurrent INSERTs")
	f.int(&c.ingest.MaxBufferedRows, "max-buffered-rows", "CLICKAGG_MAX_BUFFERED_ROWS", 262144, "rows buffered before new requests wait, then get 503")
	f.int(&c.co.MaxBodyBytes, "max-body-bytes", "CLICKAGG_MAX_BODY_BYTES", 16<<20, "largest request body (413 above)")
	f.int(&c.inflightMiB, "max-inflight-mib", "CLICKAGG_MAX_INFLIGHT_MIB", 64, "request bodies (as sent and inflated) being handled at once, in MiB; past it ingest answers 503; at least --max-body-bytes + 32 MiB so that the largest request fits (bounds memory under overload: about 330 MiB + 4 x this, plus the dedup set)")
	f.int(&c.co.MaxEvents, "max-events", "CLICKAGG_MAX_EVENTS", 100000, "most events in one request (413 above)")
	f.dur(&c.co.AllowedLateness, "allowed-lateness", "CLICKAGG_ALLOWED_LATENESS", 7*24*time.Hour, "oldest event time accepted; older events go to dead_letters as too_late")
	f.dur(&c.co.MaxFutureSkew, "max-future-skew", "CLICKAGG_MAX_FUTURE_SKEW", 5*time.Minute, "furthest event time ahead of the clock accepted; later ones go to dead_letters as future")
	f.dur(&c.cacheOpts.PastTTL, "cache-past-ttl", "CLICKAGG_CACHE_PAST_TTL", time.Hour, "cache lifetime of answers about ranges that ended before the current minute")
	f.dur(&c.cacheOpts.LocalTTL, "cache-local-ttl", "CLICKAGG_CACHE_LOCAL_TTL", 250*time.Millisecond, "keep answers in process this long in front of Redis (0: off); other instances' late marks are seen within it")
	f.dur(&c.cacheOpts.CurrentTTL, "cache-current-ttl", "CLICKAGG_CACHE_CURRENT_TTL", 5*time.Second, "cache lifetime of answers that include the current minute")
	f.dur(&c.dedupOpts.Horizon, "dedup-horizon", "CLICKAGG_DEDUP_HORIZON", 2*time.Hour, "how long accepted event ids are remembered to recognise resends at once (reconciliation covers the rest)")
	f.int(&c.dedupOpts.MaxEntries, "dedup-max-entries", "CLICKAGG_DEDUP_MAX_ENTRIES", 200_000_000, "event ids remembered at most (about 10 bytes each); past it the horizon shrinks")
	f.dur(&c.janitor.deadLetterRetention, "dead-letter-retention", "CLICKAGG_DEAD_LETTER_RETENTION", 30*24*time.Hour, "how long dead letters are kept (whole days are dropped)")
	f.dur(&c.recon.Every, "reconcile-every", "CLICKAGG_RECONCILE_EVERY", time.Hour, "how often the aggregates are reconciled with the raw events")
	f.dur(&c.recon.Lookback, "reconcile-lookback", "CLICKAGG_RECONCILE_LOOKBACK", 3*time.Hour, "each run reconciles this much of the recent past")
	f.int(&c.recon.DailyDays, "reconcile-daily-days", "CLICKAGG_RECONCILE_DAILY_DAYS", 7, "once a day, reconcile this many previous whole days")
	f.bool(&c.recon.Fix, "reconcile-fix", "CLICKAGG_RECONCILE_FIX", true, "write corrections; false only reports differences")
	f.bool(&c.noReconcile, "no-reconcile", "CLICKAGG_NO_RECONCILE", false, "do not reconcile inside serve (run 'clickagg reconcile' from cron instead)")
	f.str(&c.kafkaBrokers, "kafka-brokers", "CLICKAGG_KAFKA_BROKERS", "", "Kafka brokers as clickagg reaches them, for the lag in /v1/ingest/status (default: the ones ClickHouse uses)")
	f.dur(&c.kafkaStuck, "kafka-restart-after", "CLICKAGG_KAFKA_RESTART_AFTER", 2*time.Minute, "restart ClickHouse's Kafka consumer when the group has lag and commits nothing for this long (0: never)")
	f.dur(&c.verifyEvery, "kafka-verify-every", "CLICKAGG_KAFKA_VERIFY_EVERY", 10*time.Minute, "how often the topic is compared with kafka_inbox and lost messages landed again (0: never)")
	f.dur(&c.verifyWindow, "kafka-verify-window", "CLICKAGG_KAFKA_VERIFY_WINDOW", 15*time.Minute, "how much of the topic each verification reads back (about 24 bytes of memory per message)")
	f.str(&c.debugListen, "debug-listen", "CLICKAGG_DEBUG_LISTEN", "", "serve Go's pprof profiles at http://ADDR/debug/pprof/ (off when empty; keep it private)")
	f.dur(&c.janitor.kafkaInboxRetention, "kafka-inbox-retention", "CLICKAGG_KAFKA_INBOX_RETENTION", 24*time.Hour, "how long drained Kafka messages stay in kafka_inbox")
	c.g.register(f, "generate-", 0)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("serve", "[flags]", stderr)
	var c serveConfig
	c.register(f)
	if err := f.parse(args, 0); err != nil {
		return err
	}
	// Tokens are loaded before anything connects: a bad file fails at once.
	var auth queryapi.AuthOptions
	if err := c.sec.apply(&auth); err != nil {
		return err
	}
	log := c.logs.logger(stderr)
	useRedisLog(log)
	c.co.MaxInflightBytes = int64(c.inflightMiB) << 20

	if c.migrate {
		if err := migrateUp(ctx, c.ch); err != nil {
			return err
		}
		log.Info("schema migrated", "database", c.ch.Database)
	}

	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: c.ch.HTTP, Database: c.ch.Database, User: c.ch.User, Password: c.ch.Password, TLS: c.ch.TLS})
	if err != nil {
		return err
	}
	// The exporter's sources are filled in as their owners are built.
	var src prom.Sources
	exp := prom.New(&src)
	c.ingest.Hooks, c.cacheOpts.Hooks, auth.Hooks = exp, exp, exp
	in := ingestor.New(tr, c.ingest)
	ro, err := c.redis.options()
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ro)
	defer rdb.Close()
	conn, err := chclient.Open(c.ch)
	if err != nil {
		return err
	}
	defer conn.Close()
	store := chstore.New(conn, chstore.Options{})
	cached := cache.New(rdb, store, c.cacheOpts)

	// The dedup set is filled from ClickHouse before the collector takes
	// events, so a restart opens no hole in the immediate horizon.
	seen := dedup.New(c.dedupOpts)
	n, err := store.LoadRecentIDs(ctx, time.Now().Add(-c.dedupOpts.Horizon), seen.Add)
	if err != nil {
		return err
	}
	log.Info("dedup set loaded", "ids", n, "horizon", c.dedupOpts.Horizon)
	marker := pastMarker{cached, log}
	c.co.Dedup, c.co.DeadLetters, c.co.Hooks = seen, tr, marker
	col := collector.New(in, c.co)
	c.janitor.dedupHorizon = c.dedupOpts.Horizon
	// Background work stops with the signal and is waited for before the
	// connection it uses is closed (the defers run in reverse).
	var background sync.WaitGroup
	defer background.Wait()
	// Events ClickHouse consumed from Kafka go through the same collector.
	c.drainOpts.Logger = log
	drain := kafkaengine.NewDrain(conn, col, c.drainOpts)
	background.Go(func() { drain.Run(ctx) })
	c.janitor.inboxWatermark = func() time.Time { return drain.Stats().Watermark }
	verifier := &kafkaVerifier{conn: conn, brokers: c.kafkaBrokers, every: c.verifyEvery, window: c.verifyWindow, log: log}
	background.Go(func() { verifier.run(ctx) })
	monitor := &kafkaMonitor{conn: conn, brokers: c.kafkaBrokers, every: 2 * time.Second, stuck: c.kafkaStuck, log: log}
	background.Go(func() { monitor.run(ctx) })
	var sched *reconcile.Scheduler
	if !c.noReconcile {
		c.recon.Logger = log
		sched = reconcile.NewScheduler(reconcile.New(conn, reconcile.Options{OnFixed: func(r agg.Range) { marker.changed(r) }}), c.recon)
		background.Go(func() { sched.Run(ctx) })
	}
	background.Go(func() { runJanitor(ctx, store, c.janitor, log) })
	src.Collector, src.Ingestor, src.Dedup, src.Cache = col.Stats, in.Stats, seen.Stats, cached.Stats
	src.KafkaLag = func() *kafka.Lag { return monitor.last().Lag }
	src.KafkaRestarts = func() int64 { return monitor.last().Restarts }
	src.Drain = func() *kafkaengine.DrainStats { ds := drain.Stats(); return &ds }
	if sched != nil {
		src.Reconcile = sched.Last
	}
	app := queryapi.New(queryapi.Options{
		Metrics:    cached,
		Direct:     store,
		CacheStats: func() any { return cached.Stats() },
		ReconcileStatus: func() any {
			if sched == nil {
				return fiber.Map{"enabled": false}
			}
			return fiber.Map{"enabled": true, "last": sched.Last()}
		},
		Ingest:      col.Handle,
		BodyRefused: col.BodyRefused,
		IngestStatus: func() any {
			ks := monitor.last()
			ds := drain.Stats()
			ks.Drain = &ds
			ks.Verify = verifier.last()
			return fiber.Map{"collector": col.Stats(), "ingestor": in.Stats(), "dedup": seen.Stats(), "kafka": ks}
		},
		BodyLimit:  max(c.co.MaxBodyBytes*2, 1<<20),
		Observer:   exp,
		Auth:       auth,
		Prometheus: exp.Handler(),
		Checks: []queryapi.Check{
			{Name: "clickhouse", Critical: true, Probe: store.Ping},
			{Name: "redis", Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		},
	})
	src.OpenConnections = func() int { return int(app.Server().GetOpenConnectionsCount()) }

	if c.debugListen != "" {
		dl, err := net.Listen("tcp", c.debugListen)
		if err != nil {
			return fmt.Errorf("debug listen: %w", err)
		}
		dbg := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go dbg.Serve(dl)
		defer dbg.Close()
		log.Info("pprof", "listen", dl.Addr().String())
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Listener(ln) }()
	log.Info("serving", "listen", ln.Addr().String(), "clickhouse", c.ch.HTTP, "database", c.ch.Database, "redis", c.redis.addr)

	genDone := make(chan struct{})
	genCtx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	if src, load := c.g.options(); load.Rate != 0 {
		load.Target = "http://" + ln.Addr().String()
		if len(auth.IngestTokens) > 0 {
			load.Token = auth.IngestTokens[0]
		}
		load.Progress = stderr
		go func() {
			defer close(genDone)
			rep, err := generator.Load(genCtx, generator.New(src), load)
			if err != nil && genCtx.Err() == nil {
				log.Error("generator stopped", "err", err)
			}
			log.Info("generator done", "report", rep.String())
		}()
	} else {
		close(genDone)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests, flushing buffered events", "timeout", c.drain)
	stopGen()
	<-genDone
	sctx, cancel := context.WithTimeout(context.Background(), c.drain)
	defer cancel()
	herr := app.ShutdownWithContext(sctx)
	ierr := in.Close(sctx)
	if err := errors.Join(herr, ierr); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	st := in.Stats()
	log.Info("stopped", "committed_rows", st.CommittedRows, "failed_rows", st.FailedRows)
	return nil
}

func migrateUp(ctx context.Context, ch chclient.Options) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	m, err := schema.NewMigrator(ctx, ch)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Up()
}
