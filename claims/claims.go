// Package claims shares the hold on event ids between clickagg instances,
// in Redis, so that a batch resent to another instance (a load balancer
// picks any) is counted once at once, as a resend to the same instance is
// by the dedup set.
//
// One key per event id fingerprint (cityHash64, as the dedup set and
// ClickHouse compute it). Its value says who holds it:
//
//	"c"       committed: a resend is a duplicate
//	"p"+token held by the instance with that token, its commit under way
//
// A request claims its new ids with SET NX GET (pipelined, one round trip):
// an id with no key is its own to commit; "c" is a duplicate; another
// instance's hold is in flight, and the request stores its copy as a
// duplicate and waits for the holder's outcome, as the dedup set does for
// two requests of one instance. After the commit the holder writes "c" for
// the ids that landed and deletes its hold on the others.
//
// A holder that dies leaves its holds. Every instance keeps a liveness key
// (token, expiring after LiveTTL unless renewed); a waiter that finds the
// holder's gone waits Grace more (the holder's last INSERT settles), then
// asks ClickHouse (Options.Committed) whether the ids are in: it writes "c"
// or removes the hold. An instance that cannot renew its own liveness key
// stops claiming (ErrNotLive) rather than commit ids another may take over.
package claims

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/dedup"
)

// Options configures a Set. The zero value works but for Committed.
type Options struct {
	// Prefix starts every key; default "clickagg:". Instances that share a
	// database share a prefix, and only they.
	Prefix string
	// Horizon is how long a committed id is remembered; default 15 min.
	// Past it, a resend to another instance is found by reconciliation.
	Horizon time.Duration
	// LiveTTL is how long an instance counts as alive after it last
	// renewed its liveness key (every LiveTTL/4); default 6 s.
	LiveTTL time.Duration
	// Grace is how long a waiter waits after finding a holder dead before
	// asking ClickHouse; default 2 s.
	Grace time.Duration
	// Poll is how often a waiter looks at a hold again; default 20 ms.
	Poll time.Duration
	// Committed tells which of fps are in ClickHouse (after its running
	// INSERTs settle): used for the holds of dead instances.
	Committed func(ctx context.Context, fps []uint64) (map[uint64]bool, error)
	Logger    *slog.Logger
}

// Defaults of Options.
const (
	DefaultPrefix  = "clickagg:"
	DefaultHorizon = 15 * time.Minute
	DefaultLiveTTL = 6 * time.Second
	DefaultGrace   = 2 * time.Second
	DefaultPoll    = 20 * time.Millisecond
)

// WithDefaults returns o with its zero fields set.
func (o Options) WithDefaults() Options {
	o.Prefix = cmp.Or(o.Prefix, DefaultPrefix)
	o.Horizon = clickagg.PositiveOr(o.Horizon, DefaultHorizon)
	o.LiveTTL = clickagg.PositiveOr(o.LiveTTL, DefaultLiveTTL)
	o.Grace = clickagg.PositiveOr(o.Grace, DefaultGrace)
	o.Poll = clickagg.PositiveOr(o.Poll, DefaultPoll)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate checks a complete Options.
func (o Options) Validate() error {
	return clickagg.FirstError(
		clickagg.AtLeast("Horizon", o.Horizon, time.Second, "a second"),
		clickagg.AtLeast("LiveTTL", o.LiveTTL, 100*time.Millisecond, "100ms"),
		clickagg.Positive("Grace", o.Grace),
		clickagg.Positive("Poll", o.Poll),
	)
}

// ErrNotLive: this instance could not renew its liveness key lately, so
// other instances may take its holds over; it claims nothing until it can.
var ErrNotLive = errors.New("claims: this instance's liveness key is not renewed (Redis unreachable?)")

// Set is the instances' shared claims. Safe for concurrent use.
type Set struct {
	rdb   redis.UniversalClient
	o     Options
	token string
	hold  string // "p" + token

	mu      sync.Mutex
	renewed time.Time // last successful renewal of the liveness key
	// dead holds when each holder was first found without its liveness
	// key: the grace runs across waits (a request's wait may be shorter).
	dead map[string]time.Time
}

// New returns a Set with a token of its own; Run keeps it alive.
func New(rdb redis.UniversalClient, o Options) *Set {
	o = o.WithDefaults()
	var b [8]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	return &Set{rdb: rdb, o: o, token: tok, hold: "p" + tok, dead: map[string]time.Time{}}
}

// Token names this instance in the holds.
func (s *Set) Token() string { return s.token }

// Run renews the liveness key until ctx ends, then deletes it so that
// others take over at once what this instance still holds.
func (s *Set) Run(ctx context.Context) {
	every := s.o.LiveTTL / 4
	for {
		if err := s.renew(ctx); err != nil && ctx.Err() == nil {
			s.o.Logger.Warn("claims: liveness key not renewed", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s.rdb.Del(dctx, s.live(s.token))
			cancel()
			return
		case <-time.After(every):
		}
	}
}

// Start renews the liveness key once, so that the instance can claim
// before Run's first turn; an error means Redis is not reachable.
func (s *Set) Start(ctx context.Context) error { return s.renew(ctx) }

func (s *Set) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.LiveTTL/4)
	defer cancel()
	at := time.Now()
	if err := s.rdb.Set(ctx, s.live(s.token), 1, s.o.LiveTTL).Err(); err != nil {
		return fmt.Errorf("renew liveness key: %w", err)
	}
	s.mu.Lock()
	s.renewed = at
	s.mu.Unlock()
	return nil
}

// alive reports whether the liveness key was renewed within half its TTL:
// others see it for at least as long again.
func (s *Set) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.renewed) < s.o.LiveTTL/2
}

func (s *Set) key(fp uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], fp)
	return s.o.Prefix + "e:" + string(b[:])
}

func (s *Set) live(token string) string { return s.o.Prefix + "live:" + token }

// Claim is one request's hold on the ids it commits, and the holds of other
// instances it found. Settle it once; then Wait.
type Claim struct {
	s   *Set
	fps []uint64 // held by this claim
	// waits are ids other instances hold, by holder value ("p"+token).
	waits map[string][]uint64
}

// Fps are the ids this claim holds.
func (c *Claim) Fps() []uint64 { return c.fps }

// Claim holds the ids of fps no instance holds or committed, and tells for
// each whether it is new (Fresh), committed before (Duplicate) or held by
// another instance (InFlight). An error means nothing is held.
func (s *Set) Claim(ctx context.Context, fps []uint64, out []dedup.Verdict) (*Claim, []dedup.Verdict, error) {
	out = out[:0]
	c := &Claim{s: s}
	if len(fps) == 0 {
		return c, out, nil
	}
	if !s.alive() {
		return nil, out, ErrNotLive
	}
	keys := make([]string, len(fps))
	for i, fp := range fps {
		keys[i] = s.key(fp)
	}
	vals, err := claimScript.Run(ctx, s.rdb, keys, s.hold, s.o.Horizon.Milliseconds()).StringSlice()
	if err == nil && len(vals) != len(fps) {
		err = fmt.Errorf("%d answers for %d ids", len(vals), len(fps))
	}
	if err != nil {
		// Some may be held: let them go, or they wait for a dead holder.
		c.fps = fps
		c.release(context.WithoutCancel(ctx))
		return nil, out, fmt.Errorf("claim event ids: %w", err)
	}
	for i, v := range vals {
		switch v {
		case "":
			c.fps = append(c.fps, fps[i])
			out = append(out, dedup.Fresh)
		case "c":
			out = append(out, dedup.Duplicate)
		default: // held by another instance, or by a request of this one
			// whose settling is under way: its outcome decides
			if c.waits == nil {
				c.waits = map[string][]uint64{}
			}
			c.waits[v] = append(c.waits[v], fps[i])
			out = append(out, dedup.InFlight)
		}
	}
	return c, out, nil
}

// The scripts take a request's ids in one call: Redis spends its time on
// the ids, not on parsing thousands of commands. (On a Redis Cluster the
// keys of one call would have to share a slot; clickagg expects one Redis.)
var (
	// claimScript sets each of KEYS to ARGV[1] for ARGV[2] ms unless it
	// exists, and returns what each held before ("" for nothing).
	claimScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('SET', k, ARGV[1], 'NX', 'GET', 'PX', ARGV[2])
  if v then out[i] = v else out[i] = '' end
end
return out`)
	// settleScript, for each of KEYS that holds ARGV[1]: "c" for ARGV[2]
	// ms when its flag (ARGV[2 + i]) is 1, else deleted.
	settleScript = redis.NewScript(`
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    if ARGV[2 + i] == '1' then redis.call('SET', k, 'c', 'PX', ARGV[2]) else redis.call('DEL', k) end
  end
end
return 0`)
)

// Settle records the outcome of each held id: committed ones become "c",
// the others are let go so that a resend counts them. An error leaves
// holds that others resolve as a dead holder's once this instance is gone
// (or this one on a resend).
func (c *Claim) Settle(ctx context.Context, committed func(fp uint64) bool) error {
	if len(c.fps) == 0 {
		return nil
	}
	return c.s.settle(ctx, c.s.hold, c.fps, committed)
}

// settle ends holder's holds on fps.
func (s *Set) settle(ctx context.Context, holder string, fps []uint64, committed func(fp uint64) bool) error {
	keys := make([]string, len(fps))
	args := make([]any, 2, 2+len(fps))
	args[0], args[1] = holder, s.o.Horizon.Milliseconds()
	for i, fp := range fps {
		keys[i] = s.key(fp)
		flag := "0"
		if committed(fp) {
			flag = "1"
		}
		args = append(args, flag)
	}
	if err := settleScript.Run(ctx, s.rdb, keys, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("settle event ids: %w", err)
	}
	return nil
}

func (c *Claim) release(ctx context.Context) {
	c.Settle(ctx, func(uint64) bool { return false })
}

// Wait blocks until every hold of another instance this claim found is
// settled, and reports whether all of those ids committed. When one did
// not, the caller's copy was stored as a duplicate and the sender must
// resend. A dead holder's ids are looked up in ClickHouse. ctx bounds the
// wait: its end is reported as not committed, with its error.
func (c *Claim) Wait(ctx context.Context) (bool, error) {
	ok := true
	for holder, fps := range c.waits {
		held, err := c.s.wait(ctx, holder, fps)
		if err != nil {
			return false, err
		}
		ok = ok && held
	}
	return ok, nil
}

// wait waits for holder's outcome on fps.
func (s *Set) wait(ctx context.Context, holder string, fps []uint64) (bool, error) {
	ok := true
	for len(fps) > 0 {
		vals, err := s.values(ctx, fps)
		if err != nil {
			return false, err
		}
		left := fps[:0]
		for i, v := range vals {
			switch v {
			case holder:
				left = append(left, fps[i])
			case "c":
			default: // let go (failed), or a new holder after that
				ok = false
			}
		}
		if fps = left; len(fps) == 0 {
			break
		}
		n, err := s.rdb.Exists(ctx, s.live(holder[1:])).Result()
		if err != nil {
			return false, fmt.Errorf("read liveness key: %w", err)
		}
		if dead := s.deadFor(holder, n == 0); dead >= s.o.Grace {
			landed, err := s.resolve(ctx, holder, fps)
			if err != nil {
				return false, err
			}
			return ok && landed, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(s.o.Poll):
		}
	}
	return ok, nil
}

// deadFor records whether holder's liveness key is gone and returns how
// long it has been gone (0 while it is there).
func (s *Set) deadFor(holder string, gone bool) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !gone {
		delete(s.dead, holder)
		return 0
	}
	since, ok := s.dead[holder]
	if !ok {
		since = time.Now()
		s.dead[holder] = since
		// Dead holders are few; forget the long gone.
		for h, t := range s.dead {
			if time.Since(t) > s.o.Horizon {
				delete(s.dead, h)
			}
		}
	}
	return time.Since(since)
}

// values reads the keys of fps ("" for none).
func (s *Set) values(ctx context.Context, fps []uint64) ([]string, error) {
	keys := make([]string, len(fps))
	for i, fp := range fps {
		keys[i] = s.key(fp)
	}
	vs, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read event id holds: %w", err)
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i], _ = v.(string)
	}
	return out, nil
}

// resolve settles a dead holder's holds on fps from ClickHouse: the ids in
// it become "c", the others are let go. It reports whether all were in.
func (s *Set) resolve(ctx context.Context, holder string, fps []uint64) (bool, error) {
	if s.o.Committed == nil {
		return false, errors.New("claims: a dead instance's holds and no way to look them up")
	}
	in, err := s.o.Committed(ctx, fps)
	if err != nil {
		return false, fmt.Errorf("look up a dead instance's event ids: %w", err)
	}
	all := true
	for _, fp := range fps {
		all = all && in[fp]
	}
	if err := s.settle(ctx, holder, fps, func(fp uint64) bool { return in[fp] }); err != nil {
		return false, err
	}
	s.o.Logger.Info("claims: settled the holds of an instance gone", "holder", holder[1:], "ids", len(fps), "committed", all)
	return all, nil
}
