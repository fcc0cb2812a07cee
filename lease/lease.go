// Package lease runs work on one clickagg instance at a time: the instance
// doing it holds a named lease in a Store (a Redis key here, an ephemeral
// node in package zookeeper), confirms it every TTL/3, and loses it when it
// dies (the key expires, the session ends) or cannot reach the store (it
// stops at TTL/2, before the lease can pass to another, so two never
// overlap by clock).
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
	// Key names the lease in the store (a Redis key, a ZooKeeper path):
	// instances that share work share it.
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
		return &clickagg.ConfigError{Field: "Key", Value: `""`, Want: "the lease's name in its store"}
	}
	return clickagg.AtLeast("TTL", o.TTL, time.Second, "a second")
}

// Store keeps leases. Acquire takes key for token if it is free, or
// confirms (renewing it where the store needs that) that token holds it,
// for ttl; it reports whether token holds it after the call. Release gives
// key up if token holds it.
type Store interface {
	Acquire(ctx context.Context, key, token string, ttl time.Duration) (bool, error)
	Release(ctx context.Context, key, token string) error
}

// Lease is one instance's claim on a named lease.
type Lease struct {
	store Store
	o     Options
	token string
	held  atomic.Bool
	terms atomic.Int64
}

// New returns a Lease kept in store, with a token of its own.
func New(store Store, o Options) *Lease {
	var b [8]byte
	rand.Read(b[:])
	return &Lease{store: store, o: o.WithDefaults(), token: hex.EncodeToString(b[:])}
}

// Redis keeps leases as keys that expire: SET NX PX, renewed with PEXPIRE.
func Redis(rdb redis.UniversalClient) Store { return redisStore{rdb} }

type redisStore struct{ rdb redis.UniversalClient }

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

func (r redisStore) Acquire(ctx context.Context, key, token string, ttl time.Duration) (bool, error) {
	n, err := acquireScript.Run(ctx, r.rdb, []string{key}, token, ttl.Milliseconds()).Int()
	return n == 1, err
}

func (r redisStore) Release(ctx context.Context, key, token string) error {
	return releaseScript.Run(ctx, r.rdb, []string{key}, token).Err()
}

func (l *Lease) acquire(ctx context.Context, limit time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ok, err := l.store.Acquire(ctx, l.o.Key, l.token, l.o.TTL)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", l.o.Key, err)
	}
	return ok, nil
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
	// While held, the lease is good until renewed + TTL/2 at the latest
	// (renewed is when the last good attempt started, which errs early):
	// no attempt or wait runs past that.
	left := func() time.Duration {
		if stop == nil {
			return every
		}
		return min(every, time.Until(renewed.Add(l.o.TTL/2)))
	}
	for {
		started := time.Now()
		ok, err := l.acquire(ctx, left())
		switch {
		case ok:
			renewed = started
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
		case left() <= 0:
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
			l.store.Release(rctx, l.o.Key, l.token)
			cancel()
			return
		case <-time.After(max(left(), time.Millisecond)):
		}
	}
}
