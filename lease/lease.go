// Package lease runs work on one clickagg instance at a time: the instance
// doing it holds a named key in Redis, renews it, and loses it when it dies
// (the key expires) or cannot reach Redis (it stops before the key can
// expire, so two never overlap by clock).
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg"
)

// Options configures a Lease.
type Options struct {
	// Key is the Redis key: instances that share work share it.
	Key string
	// TTL is how long the lease outlives its holder; default 15 s. The
	// holder renews it every TTL/3 and stops the work when it could not
	// for TTL/2.
	TTL    time.Duration
	Logger *slog.Logger
}

// DefaultTTL is Options.TTL's default.
const DefaultTTL = 15 * time.Second

// WithDefaults returns o with its zero fields set.
func (o Options) WithDefaults() Options {
	o.TTL = clickagg.PositiveOr(o.TTL, DefaultTTL)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate checks a complete Options.
func (o Options) Validate() error {
	if o.Key == "" {
		return &clickagg.ConfigError{Field: "Key", Value: `""`, Want: "a Redis key"}
	}
	return clickagg.AtLeast("TTL", o.TTL, time.Second, "a second")
}

// Lease is one instance's claim on a named lease.
type Lease struct {
	rdb   redis.UniversalClient
	o     Options
	token string
	held  atomic.Bool
	terms atomic.Int64
}

// New returns a Lease with a token of its own.
func New(rdb redis.UniversalClient, o Options) *Lease {
	var b [8]byte
	rand.Read(b[:])
	return &Lease{rdb: rdb, o: o.WithDefaults(), token: hex.EncodeToString(b[:])}
}

// Held reports whether this instance holds the lease now.
func (l *Lease) Held() bool { return l.held.Load() }

// Terms is how many times this instance has taken the lease.
func (l *Lease) Terms() int64 { return l.terms.Load() }

// acquireScript takes KEYS[1] for ARGV[1] for ARGV[2] ms if it is free, or
// renews it if ARGV[1] holds it; 1 if held.
var acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`)

// releaseScript deletes KEYS[1] if ARGV[1] holds it.
var releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

func (l *Lease) acquire(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.o.TTL/3)
	defer cancel()
	n, err := acquireScript.Run(ctx, l.rdb, []string{l.o.Key}, l.token, l.o.TTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", l.o.Key, err)
	}
	return n == 1, nil
}

// Run calls work whenever this instance holds the lease, with a context
// that ends when it loses it or ctx ends, and waits for work to return
// each time. It gives the lease up when ctx ends.
func (l *Lease) Run(ctx context.Context, work func(ctx context.Context)) {
	var (
		stop    context.CancelFunc
		done    sync.WaitGroup
		renewed time.Time
	)
	end := func(why string, err error) {
		if stop == nil {
			return
		}
		stop()
		done.Wait()
		stop = nil
		l.held.Store(false)
		l.o.Logger.Info("lease given up", "key", l.o.Key, "why", why, "err", err)
	}
	every := l.o.TTL / 3
	for {
		ok, err := l.acquire(ctx)
		switch {
		case ok:
			renewed = time.Now()
			if stop == nil {
				wctx, cancel := context.WithCancel(ctx)
				stop = cancel
				l.held.Store(true)
				l.terms.Add(1)
				l.o.Logger.Info("lease taken: this instance runs the scheduled work", "key", l.o.Key)
				done.Go(func() { work(wctx) })
			}
		case err == nil:
			end("another instance holds it", nil)
		case time.Since(renewed) >= l.o.TTL/2:
			// Others may take it once it expires: stop well before.
			end("not renewed", err)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			l.o.Logger.Warn("lease not renewed", "key", l.o.Key, "err", err)
		}
		select {
		case <-ctx.Done():
			end("stopping", nil)
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			releaseScript.Run(rctx, l.rdb, []string{l.o.Key}, l.token)
			cancel()
			return
		case <-time.After(every):
		}
	}
}
