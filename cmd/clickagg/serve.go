package main

import (
	"context"
	"io"

	"github.com/clickagg/clickagg/server"
)

// setupServe registers serve's flags into a server.Config that starts as
// server.DefaultConfig: the defaults live in the packages, once.
func setupServe(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	c := server.DefaultConfig()
	f.root = &c
	var (
		logs logConfig
		sec  securityConfig
		rc   redisConfig
	)
	f.listen(&c.Listen)
	f.clickhouse(&c.ClickHouse)
	rc.register(f, &c.Redis)
	logs.register(f)
	sec.register(f, &c.Auth)
	f.v(&c.Migrate, "migrate", "CLICKAGG_MIGRATE", "apply the embedded schema migrations before serving")
	f.v(&c.ShutdownTimeout, "shutdown-timeout", "CLICKAGG_SHUTDOWN_TIMEOUT", "on SIGTERM, how long to drain requests and flush buffered events")
	f.v(&c.Ingest.MaxRows, "batch-rows", "CLICKAGG_BATCH_ROWS", "rows that make an INSERT block")
	f.v(&c.Ingest.Linger, "linger", "CLICKAGG_LINGER", "longest wait before a partial block is sent")
	f.v(&c.Ingest.MaxInflight, "inflight", "CLICKAGG_INFLIGHT", "concurrent INSERTs (1 to 64)")
	f.v(&c.Ingest.MaxBufferedRows, "max-buffered-rows", "CLICKAGG_MAX_BUFFERED_ROWS", "rows buffered before new requests wait, then get 503 (at least --batch-rows)")
	f.v(&c.ClickHouseCompression, "clickhouse-compression", "CLICKAGG_CLICKHOUSE_COMPRESSION", "how inserted blocks travel to ClickHouse: lz4, none, or auto: none when every ClickHouse HTTP URL inserted into is on a loopback host (LZ4 would cost CPU for nothing), else lz4 (saves bandwidth)")
	f.v(&c.Collector.MaxBodyBytes, "max-body-bytes", "CLICKAGG_MAX_BODY_BYTES", "largest request body (413 above)")
	f.v(&c.Collector.MaxInflightBytes, "max-inflight-mib", "CLICKAGG_MAX_INFLIGHT_MIB", "request bodies (as sent and inflated) being handled at once, in MiB; past it ingest answers 503; at least --max-body-bytes + 32 MiB so that the largest request fits (bounds memory under overload: about 330 MiB + 4 x this, plus the dedup set)")
	f.v(&c.Collector.MaxEvents, "max-events", "CLICKAGG_MAX_EVENTS", "most events in one request (413 above)")
	f.v(&c.Collector.AllowedLateness, "allowed-lateness", "CLICKAGG_ALLOWED_LATENESS", "oldest event time accepted; older events go to dead_letters as too_late")
	f.v(&c.Collector.MaxFutureSkew, "max-future-skew", "CLICKAGG_MAX_FUTURE_SKEW", "furthest event time ahead of the clock accepted; later ones go to dead_letters as future")
	f.v(&c.Cache.PastTTL, "cache-past-ttl", "CLICKAGG_CACHE_PAST_TTL", "cache lifetime of answers about ranges that ended before the current minute")
	f.v(&c.Cache.LocalTTL, "cache-local-ttl", "CLICKAGG_CACHE_LOCAL_TTL", "keep answers in process this long in front of Redis (0: off); other instances' late marks are seen within it")
	f.v(&c.Cache.CurrentTTL, "cache-current-ttl", "CLICKAGG_CACHE_CURRENT_TTL", "cache lifetime of answers that include the current minute")
	f.v(&c.Dedup.Horizon, "dedup-horizon", "CLICKAGG_DEDUP_HORIZON", "how long accepted event ids are remembered to recognise resends at once (reconciliation covers the rest)")
	f.v(&c.SharedDedup, "dedup-shared", "CLICKAGG_DEDUP_SHARED", "run as one of several instances on this database: event ids are held across them in Redis, so that a resend to another instance counts once at once (ingest answers 503 while Redis is out of reach), and scheduled reconciliation, Kafka verification and the inbox drain run on one instance at a time, under a lease (in Redis; on a cluster in its ZooKeeper, --zookeeper)")
	f.v(&c.LeaseTTL, "lease-ttl", "CLICKAGG_LEASE_TTL", "with --dedup-shared, how long the scheduled work's lease outlives an instance that died holding it (on a cluster: the ZooKeeper session timeout asked for, which the server keeps within its min/maxSessionTimeout)")
	if f.local != nil && f.local.Cluster != "" {
		c.ZooKeeper = f.local.ZooKeeper
	}
	f.v(&c.ZooKeeper, "zookeeper", "CLICKAGG_ZOOKEEPER", "the cluster's ZooKeeper or Keeper, host:port[,host:port...]: with --dedup-shared on a cluster the lease lives there (default: the local services' cluster's)")
	f.v(&c.Claims.Horizon, "dedup-shared-horizon", "CLICKAGG_DEDUP_SHARED_HORIZON", "how long Redis remembers an accepted event id for the other instances (about 90 bytes each; reconciliation covers the rest)")
	f.v(&c.Dedup.MaxEntries, "dedup-max-entries", "CLICKAGG_DEDUP_MAX_ENTRIES", "event ids remembered at most (about 10 bytes each); past it the horizon shrinks")
	f.v(&c.DeadLetterRetention, "dead-letter-retention", "CLICKAGG_DEAD_LETTER_RETENTION", "how long dead letters are kept (whole days are dropped; at least 24h)")
	f.v(&c.NoRollups, "no-rollups", "CLICKAGG_NO_ROLLUPS", "answer questions from the minute cubes only, not from the hourly and daily rollups (the planner off: for comparisons)")
	f.v(&c.Reconcile.Every, "reconcile-every", "CLICKAGG_RECONCILE_EVERY", "how often the aggregates are reconciled with the raw events")
	f.v(&c.Reconcile.Lookback, "reconcile-lookback", "CLICKAGG_RECONCILE_LOOKBACK", "each run reconciles this much of the recent past")
	f.v(&c.Reconcile.DailyDays, "reconcile-daily-days", "CLICKAGG_RECONCILE_DAILY_DAYS", "once a day, reconcile this many previous whole days")
	f.v(&c.Reconcile.Fix, "reconcile-fix", "CLICKAGG_RECONCILE_FIX", "write corrections; false only reports differences")
	f.v(&c.NoReconcile, "no-reconcile", "CLICKAGG_NO_RECONCILE", "do not reconcile inside serve (run 'clickagg reconcile' from cron instead)")
	f.v(&c.Kafka.Brokers, "kafka-brokers", "CLICKAGG_KAFKA_BROKERS", "Kafka brokers as clickagg reaches them, for the lag in /v1/ingest/status (default: the ones ClickHouse uses)")
	f.v(&c.Kafka.RestartAfter, "kafka-restart-after", "CLICKAGG_KAFKA_RESTART_AFTER", "restart ClickHouse's Kafka consumer when the group has lag and commits nothing for this long (0: never)")
	f.v(&c.Kafka.VerifyEvery, "kafka-verify-every", "CLICKAGG_KAFKA_VERIFY_EVERY", "how often the topic is compared with kafka_inbox and lost messages landed again (0: never)")
	f.v(&c.Kafka.VerifyWindow, "kafka-verify-window", "CLICKAGG_KAFKA_VERIFY_WINDOW", "how much of the topic each verification reads back (about 24 bytes of memory per message)")
	f.v(&c.Kafka.InboxRetention, "kafka-inbox-retention", "CLICKAGG_KAFKA_INBOX_RETENTION", "how long drained Kafka messages stay in kafka_inbox")
	f.v(&c.DebugListen, "debug-listen", "CLICKAGG_DEBUG_LISTEN", "serve Go's pprof profiles at http://ADDR/debug/pprof/ (off when empty; keep it private)")
	genFlags(f, &c.Generate.Source, &c.Generate.Load, "generate-", "events per second the built-in generator posts to this server (0: none; negative: as fast as accepted)")
	f.after = append(f.after, func() error {
		// Tokens are read before anything connects: a bad file fails at once.
		return sec.load(&c.Auth)
	})

	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if err := f.check(c.Validate()); err != nil {
			return err
		}
		c.Logger = logs.logger(stderr)
		c.Progress = stderr
		useRedisLog(c.Logger)
		s, err := server.Open(ctx, c)
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Run(ctx)
	}
}
