// Package zookeeper keeps clickagg's leases in a cluster's ZooKeeper (or
// ClickHouse Keeper) as ephemeral nodes. The server deletes such a node when
// the session that made it ends, closed by its holder or expired after the
// holder died, so a lease lives exactly as long as its holder's session and
// needs no renewal of its own: holding it is owning the node from a live
// session.
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/clickagg/clickagg"
)

// Options configures a Store.
type Options struct {
	// Servers are the ensemble's host:port addresses.
	Servers []string
	// SessionTimeout is asked of the server, which keeps it within its
	// minSessionTimeout and maxSessionTimeout; a dead holder's lease is
	// free that long after it was last heard. Default 15 s.
	SessionTimeout time.Duration
	Logger         *slog.Logger
}

// DefaultSessionTimeout is Options.SessionTimeout's default.
const DefaultSessionTimeout = 15 * time.Second

// WithDefaults returns o with its zero fields set.
func (o Options) WithDefaults() Options {
	o.SessionTimeout = clickagg.PositiveOr(o.SessionTimeout, DefaultSessionTimeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Store is one session with ZooKeeper, holding leases (lease.Store).
type Store struct {
	conn *zk.Conn
}

// Open starts a session in the background: it does not wait for ZooKeeper,
// whose absence Acquire reports.
func Open(o Options) (*Store, error) {
	o = o.WithDefaults()
	if len(o.Servers) == 0 {
		return nil, errors.New("zookeeper: no servers")
	}
	conn, _, err := zk.Connect(o.Servers, o.SessionTimeout, zk.WithLogInfo(false), zk.WithLogger(logger{o.Logger}))
	if err != nil {
		return nil, fmt.Errorf("zookeeper: %w", err)
	}
	return &Store{conn: conn}, nil
}

// Close ends the session: its leases are free at once.
func (s *Store) Close() { s.conn.Close() }

// call runs op unless ctx ends first. go-zookeeper takes no contexts; an
// op left behind ends when the connection answers or closes.
func call[T any](ctx context.Context, s *Store, op func() (T, error)) (T, error) {
	var zero T
	if st := s.conn.State(); st != zk.StateHasSession {
		return zero, fmt.Errorf("zookeeper: no session (%s)", st)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := op()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Acquire creates key as an ephemeral node of this session holding token,
// or reports whether this session owns the node that is there. ttl is the
// session's (Options.SessionTimeout), not the call's.
func (s *Store) Acquire(ctx context.Context, key, token string, _ time.Duration) (bool, error) {
	return call(ctx, s, func() (bool, error) {
		mine := s.conn.SessionID()
		_, st, err := s.conn.Get(key)
		switch {
		case err == nil:
			return st.EphemeralOwner == mine, nil
		case !errors.Is(err, zk.ErrNoNode):
			return false, err
		}
		if err := s.parents(path.Dir(key)); err != nil {
			return false, err
		}
		_, err = s.conn.Create(key, []byte(token), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
		switch {
		case errors.Is(err, zk.ErrNodeExists):
			return false, nil
		case err != nil:
			return false, err
		}
		// A session that expired and came back as a new one while Create
		// was in flight owns nothing it made before; check who owns it.
		_, st, err = s.conn.Get(key)
		if err != nil {
			return false, err
		}
		return st.EphemeralOwner == s.conn.SessionID(), nil
	})
}

// Release deletes key if this session owns it.
func (s *Store) Release(ctx context.Context, key, _ string) error {
	_, err := call(ctx, s, func() (struct{}, error) {
		_, st, err := s.conn.Get(key)
		if errors.Is(err, zk.ErrNoNode) {
			return struct{}{}, nil
		}
		if err != nil || st.EphemeralOwner != s.conn.SessionID() {
			return struct{}{}, err
		}
		err = s.conn.Delete(key, st.Version)
		if errors.Is(err, zk.ErrNoNode) || errors.Is(err, zk.ErrBadVersion) {
			err = nil
		}
		return struct{}{}, err
	})
	return err
}

// parents creates dir and the nodes above it as persistent nodes.
func (s *Store) parents(dir string) error {
	if dir == "/" || dir == "." {
		return nil
	}
	ok, _, err := s.conn.Exists(dir)
	if err != nil || ok {
		return err
	}
	if err := s.parents(path.Dir(dir)); err != nil {
		return err
	}
	_, err = s.conn.Create(dir, nil, 0, zk.WorldACL(zk.PermAll))
	if errors.Is(err, zk.ErrNodeExists) {
		err = nil
	}
	return err
}

// logger hands go-zookeeper's messages (connection failures: its
// informational ones are off) to slog.
type logger struct{ l *slog.Logger }

func (l logger) Printf(format string, args ...any) {
	l.l.Warn("zookeeper: " + fmt.Sprintf(format, args...))
}
