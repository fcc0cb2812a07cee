// Package server is one clickagg process, as `clickagg serve` runs it and
// the end-to-end tests start it: the collector and query API on one
// listener, the ingestor, dedup set and cache, the Kafka drain and
// watchdog, scheduled reconciliation and retention, built from a validated
// Config.
//
// Open binds the listeners first (a taken port fails at once), then
// migrates if asked, connects and loads the dedup set; Run serves until its
// context ends or a component fails, then drains requests and flushes
// buffered events; Close releases the connections.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/claims"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/console"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/kafka"
	"github.com/clickagg/clickagg/kafkaengine"
	"github.com/clickagg/clickagg/lease"
	"github.com/clickagg/clickagg/prom"
	"github.com/clickagg/clickagg/queryapi"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/schema"
	"github.com/clickagg/clickagg/zookeeper"
)

// Server is one clickagg process. Open it, Run it once, Close it.
type Server struct {
	cfg Config
	log *slog.Logger

	ln, debugLn net.Listener
	conn        driver.Conn
	rdb         *redis.Client
	in          ingest
	store       *chstore.Store
	cache       *cache.Cache
	seen        *dedup.Set
	col         *collector.Collector
	app         *fiber.App
	drain       *kafkaengine.Drain
	claims      *claims.Set      // nil unless SharedDedup
	lease       *lease.Lease     // nil unless SharedDedup
	zk          *zookeeper.Store // the lease's store on a cluster; nil otherwise
	monitor     *kafkaengine.Monitor
	verifier    *kafkaengine.Verifier
	rec         *reconcile.Reconciler // nil with NoReconcile
	sched       *reconcile.Scheduler  // nil with NoReconcile

	ran       atomic.Bool // Run was called: it closes the ingestor
	closeOnce sync.Once
}

// Open validates cfg and builds the server: listeners bound, schema
// migrated when cfg.Migrate, connections made, the dedup set loaded from
// ClickHouse. Nothing is served before Run. On error, everything Open made
// is released.
func Open(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Listen first: a taken port fails at once, before minutes of loading.
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.DebugListen != "" {
		if s.debugLn, err = net.Listen("tcp", cfg.DebugListen); err != nil {
			return nil, fmt.Errorf("debug listen: %w", err)
		}
	}
	if cfg.Migrate {
		if err := schema.MigrateUp(ctx, cfg.ClickHouse); err != nil {
			return nil, err
		}
		s.log.Info("schema migrated", "database", cfg.ClickHouse.Database)
	}

	ch := cfg.ClickHouse
	// The exporter's sources are filled in as their owners are built.
	var src prom.Sources
	exp := prom.New(&src)
	cfg.Ingest.Hooks, cfg.Cache.Hooks, cfg.Auth.Hooks = exp, exp, exp
	s.rdb = redis.NewClient(cfg.Redis.ClientOptions())
	if s.conn, err = chclient.Open(ch); err != nil {
		return nil, err
	}
	var dead ingestor.Transport
	if s.in, dead, err = openIngest(ctx, s.conn, ch, cfg.Ingest, cfg.CompressInserts()); err != nil {
		return nil, err
	}
	if ch.Cluster != "" {
		cfg.Collector.DeadLettersTable = "dead_letters" + schema.LocalSuffix
	}
	s.store = chstore.New(s.conn, chstore.Options{Cluster: ch.Cluster, NoRollups: cfg.NoRollups, Hooks: exp})
	s.warnDefiners(ctx)
	s.cache = cache.New(s.rdb, s.store, cfg.Cache)

	// The dedup set is filled from ClickHouse before the collector takes
	// events, so a restart opens no hole in the immediate horizon.
	s.seen = dedup.New(cfg.Dedup)
	n, err := s.store.LoadRecentIDs(ctx, time.Now().Add(-cfg.Dedup.Horizon), s.seen.Add)
	if err != nil {
		return nil, err
	}
	s.log.Info("dedup set loaded", "ids", n, "horizon", cfg.Dedup.Horizon)
	if cfg.SharedDedup {
		o := cfg.Claims
		o.Prefix, o.Committed, o.Logger = o.Prefix+ch.Database+":", s.store.CommittedIDs, s.log
		s.claims = claims.New(s.rdb, o)
		if err := s.claims.Start(ctx); err != nil {
			s.log.Warn("event ids cannot be held across instances yet: ingest answers 503 until Redis answers", "err", err)
		}
		cfg.Collector.Shared = s.claims
		lo := lease.Options{Key: o.Prefix + "lease:scheduled", TTL: cfg.LeaseTTL, Logger: s.log}
		store := lease.Redis(s.rdb)
		if cfg.ZooKeeper != "" {
			// On a cluster the lease is an ephemeral node in its ZooKeeper:
			// it goes with its holder's session, whatever Redis does.
			s.zk, err = zookeeper.Open(zookeeper.Options{Servers: strings.Split(cfg.ZooKeeper, ","), SessionTimeout: cfg.LeaseTTL, Logger: s.log})
			if err != nil {
				return nil, err
			}
			store, lo.Key = s.zk, "/clickagg/"+ch.Database+"/lease/scheduled"
		}
		s.lease = lease.New(store, lo)
	}
	marker := pastMarker{s.cache, s.log}
	cfg.Collector.Dedup, cfg.Collector.DeadLetters, cfg.Collector.Hooks, cfg.Collector.Logger = s.seen, dead, marker, s.log
	s.col = collector.New(s.in, cfg.Collector)

	// Events ClickHouse consumed from Kafka go through the same collector.
	cfg.Kafka.Drain.Logger, cfg.Kafka.Drain.Cluster = s.log, ch.Cluster
	s.drain = kafkaengine.NewDrain(s.conn, s.col, cfg.Kafka.Drain)
	s.verifier = &kafkaengine.Verifier{Conn: s.conn, Cluster: ch.Cluster, Brokers: cfg.Kafka.Brokers, Every: cfg.Kafka.VerifyEvery, Window: cfg.Kafka.VerifyWindow, Logger: s.log}
	s.monitor = &kafkaengine.Monitor{Conn: s.conn, Cluster: ch.Cluster, Brokers: cfg.Kafka.Brokers, Every: kafkaMonitorEvery, Stuck: cfg.Kafka.RestartAfter, Restarter: s.LeaseHeld, Logger: s.log}
	if !cfg.NoReconcile {
		cfg.Reconcile.Logger = s.log
		s.rec, err = reconcile.Open(ctx, s.conn, ch, reconcile.Options{OnFixed: func(r clickagg.Range) { marker.changed(r) }})
		if err != nil {
			return nil, err
		}
		s.sched = reconcile.NewScheduler(s.rec, cfg.Reconcile)
		src.Reconcile = s.sched.Last
	}
	src.Collector, src.Ingestor, src.Dedup, src.Cache = s.col.Stats, s.in.Stats, s.seen.Stats, s.cache.Stats
	src.KafkaLag = func() *kafka.Lag { return s.monitor.Last().Lag }
	src.KafkaRestarts = func() int64 { return s.monitor.Last().Restarts }
	src.Drain = func() *kafkaengine.DrainStats { ds := s.drain.Stats(); return &ds }

	s.app = queryapi.New(queryapi.Options{
		Metrics:         s.cache,
		Direct:          s.store,
		CacheStats:      func() any { return s.cache.Stats() },
		ReconcileStatus: func() any { return s.ReconcileStatus() },
		Ingest:          s.col.Handle,
		BodyRefused:     s.col.BodyRefused,
		IngestStatus:    func() any { return s.IngestStatus() },
		BodyLimit:       max(cfg.Collector.MaxBodyBytes*2, 1<<20),
		Observer:        exp,
		Auth:            cfg.Auth,
		Prometheus:      exp.Handler(),
		Logger:          s.log,
		Checks: []queryapi.Check{
			{Name: "clickhouse", Critical: true, Probe: s.store.Ping},
			{Name: "redis", Probe: func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }},
		},
	})
	src.OpenConnections = func() int { return int(s.app.Server().GetOpenConnectionsCount()) }
	s.cfg = cfg
	return s, nil
}

// URL is the base URL of the API, e.g. http://127.0.0.1:8080 (the port
// chosen when Listen asked for port 0).
func (s *Server) URL() string {
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1" // what a browser on this machine opens
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// Run serves until ctx ends, then drains requests and flushes buffered
// events within ShutdownTimeout. If the API or debug server fails first,
// everything else is stopped the same way and that error returned. Run
// may be called once.
func (s *Server) Run(ctx context.Context) error {
	if s.ran.Swap(true) {
		return errors.New("server: Run called twice")
	}
	g, gctx := errgroup.WithContext(ctx)
	var stopping atomic.Bool

	// Background work stops first on shutdown and is waited for before the
	// ingestor it feeds is closed.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	// The liveness key outlives every commit: gone, other instances take
	// this one's holds over.
	live, stopLive := context.WithCancel(context.Background())
	liveDone := make(chan struct{})
	defer func() { stopLive(); <-liveDone }()
	go func() {
		defer close(liveDone)
		if s.claims != nil {
			s.claims.Run(live)
		}
	}()
	var background sync.WaitGroup
	// Work that must not run twice at once runs, with several instances,
	// on the one holding the lease.
	scheduled := func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() { s.drain.Run(ctx) })
		wg.Go(func() { s.verifier.Run(ctx) })
		if s.sched != nil {
			wg.Go(func() { s.sched.Run(ctx) })
		}
		wg.Wait()
	}
	if s.lease != nil {
		background.Go(func() { s.lease.Run(bg, scheduled) })
	} else {
		background.Go(func() { scheduled(bg) })
	}
	background.Go(func() { s.monitor.Run(bg) })
	background.Go(func() { s.runJanitor(bg) })

	g.Go(func() error {
		if err := s.app.Listener(s.ln); err != nil && !stopping.Load() {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	var dbg *http.Server
	if s.debugLn != nil {
		dbg = &http.Server{Handler: debugMux(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := dbg.Serve(s.debugLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("debug server: %w", err)
			}
			return nil
		})
	}
	s.banner()

	genCtx, stopGen := context.WithCancel(gctx)
	defer stopGen()
	genDone := s.generate(genCtx)

	g.Go(func() error {
		<-gctx.Done()
		stopping.Store(true)
		s.log.Info("shutting down: draining requests, flushing buffered events", "timeout", s.cfg.ShutdownTimeout)
		stopGen()
		<-genDone
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		herr := s.app.ShutdownWithContext(sctx)
		if dbg != nil {
			dbg.Close()
		}
		stopBG()
		background.Wait()
		ierr := s.in.Close(sctx)
		s.col.WaitSettled()
		stopLive()
		<-liveDone
		if err := errors.Join(herr, ierr); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		st := s.in.Stats()
		s.log.Info("stopped", "committed_rows", st.CommittedRows, "failed_rows", st.FailedRows)
		return nil
	})
	return g.Wait()
}

// LeaseHeld reports whether this instance runs the scheduled work: always
// alone, and with SharedDedup while it holds the lease.
func (s *Server) LeaseHeld() bool { return s.lease == nil || s.lease.Held() }

// Close releases the connections and, when Run never ran, the listeners
// and the ingestor. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if !s.ran.Load() {
			for _, ln := range []net.Listener{s.ln, s.debugLn} {
				if ln != nil {
					ln.Close()
				}
			}
			if s.in != nil {
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
				s.in.Close(ctx)
				cancel()
			}
		}
		if s.rec != nil {
			s.rec.Close()
		}
		if s.conn != nil {
			s.conn.Close()
		}
		if s.rdb != nil {
			s.rdb.Close()
		}
		if s.zk != nil {
			s.zk.Close()
		}
	})
	return nil
}

// generate runs the built-in generator against the server when its rate
// is set; the channel closes when it has stopped.
func (s *Server) generate(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	g := s.cfg.Generate
	if g.Load.Rate == 0 {
		close(done)
		return done
	}
	src := g.Source
	src.Now = time.Now // live traffic: event time is now, minus lateness
	// A new prefix per run: a second run with the same seed is new traffic,
	// not a resend of the first (which the collector would count once).
	src.IDPrefix = fmt.Sprintf("%x-", time.Now().UnixNano())
	load := g.Load
	load.Target = s.URL()
	if len(s.cfg.Auth.IngestTokens) > 0 {
		load.Token = s.cfg.Auth.IngestTokens[0]
	}
	load.Progress = s.cfg.Progress
	go func() {
		defer close(done)
		rep, err := generator.Load(ctx, generator.New(src), load)
		if err != nil && ctx.Err() == nil {
			s.log.Error("generator stopped", "err", err)
		}
		s.log.Info("generator done", "report", rep.String())
	}()
	return done
}

// warnDefiners says which views would stop ingest if their definer user
// went: none unless the server records definers (schema/definer.go).
func (s *Server) warnDefiners(ctx context.Context) {
	views, err := schema.Definers(ctx, s.conn)
	if err != nil {
		s.log.Warn("could not read the views' definers", "err", err)
		return
	}
	for view, user := range views {
		s.log.Warn("materialized view runs as its definer: inserts into events fail if that user is dropped or renamed",
			"view", view, "definer", user, "unpin", "ALTER TABLE "+view+" MODIFY SQL SECURITY NONE (needs the ALLOW SQL SECURITY NONE grant)")
	}
}

// banner says where to go next, in one line.
func (s *Server) banner() {
	u := s.URL()
	attrs := []any{"dashboard", u + console.Path + "/", "api", u, "docs", u + "/docs", "try", u + "/v1/metrics?group_by=country&window=15m",
		"ingest", "POST " + u + "/v1/events", "metrics", u + "/metrics",
		"clickhouse", s.cfg.ClickHouse.HTTP, "database", s.cfg.ClickHouse.Database, "redis", s.cfg.Redis.Addr}
	if c := s.cfg.ClickHouse; c.Cluster != "" {
		attrs = append(attrs, "cluster", c.Cluster, "shards", len(c.Shards))
	}
	s.log.Info("serving", attrs...)
}

// debugMux serves Go's profiles, on their own listener: never on the API's.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
