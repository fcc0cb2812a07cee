package kafkaengine

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg/kafka"
)

// State is the Kafka path as serve reports it (GET /v1/ingest/status) and
// `clickagg kafka status` prints it.
type State struct {
	Enabled  bool          `json:"enabled"`
	Config   *Config       `json:"config,omitempty"`
	Lag      *kafka.Lag    `json:"lag,omitempty"`
	LagError string        `json:"lag_error,omitempty"`
	Drain    *DrainStats   `json:"drain,omitempty"`
	Verify   *VerifyResult `json:"verify,omitempty"`
	// Restarts counts the engine restarts by the Monitor.
	Restarts int64 `json:"engine_restarts"`
}

// VerifyResult is the last scheduled verification.
type VerifyResult struct {
	At     time.Time     `json:"at"`
	Report *VerifyReport `json:"report,omitempty"`
	Err    string        `json:"error,omitempty"`
}

// Verifier compares the recent topic with kafka_inbox on a schedule and
// lands what the Kafka engine lost.
type Verifier struct {
	Conn    driver.Conn
	Cluster string // the remote_servers name the database lives on, if any
	Brokers string // as this process reaches them; "": the ones ClickHouse uses
	// Every is the time between verifications (0: never); Window how much
	// of the topic each reads back.
	Every, Window time.Duration
	Logger        *slog.Logger

	mu   sync.Mutex
	prev *VerifyResult
}

// Run verifies every v.Every until ctx ends.
func (v *Verifier) Run(ctx context.Context) {
	if v.Every <= 0 {
		return
	}
	t := time.NewTicker(v.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, on, err := Current(ctx, v.Conn); err != nil || !on {
			continue
		}
		now := time.Now()
		rep, err := VerifyTopic(ctx, v.Conn, v.Cluster, v.Brokers, now.Add(-v.Window), now, true)
		r := &VerifyResult{At: now, Report: &rep}
		switch {
		case err != nil && ctx.Err() == nil:
			r.Err = err.Error()
			v.Logger.Warn("kafka verify", "err", err)
		case rep.Missing > 0:
			v.Logger.Warn("kafka verify landed messages the Kafka engine lost", "missing", rep.Missing, "from", rep.From, "to", rep.To)
		}
		v.mu.Lock()
		v.prev = r
		v.mu.Unlock()
	}
}

// Last returns the last verification, nil before the first.
func (v *Verifier) Last() *VerifyResult {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.prev
}

// Monitor refreshes the Kafka state in the background, so that a status
// request never waits for brokers that do not answer, and is the engine's
// watchdog: 18.16's consumer can sit idle with lag, and re-creating the
// engine table (Restart) resumes it from the group's offsets.
type Monitor struct {
	Conn    driver.Conn
	Cluster string        // the remote_servers name the database lives on, if any
	Brokers string        // as this process reaches them; "": the ones ClickHouse uses
	Every   time.Duration // between refreshes
	// Stuck is how long the group may have lag without committing before
	// the engine is restarted; 0: never.
	Stuck time.Duration
	// Restarter, when set, says whether this process may restart the
	// engine: with several instances, the one holding the lease.
	Restarter func() bool
	Logger    *slog.Logger

	mu       sync.Mutex
	state    State
	restarts int64
}

// Run refreshes every m.Every until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.Every)
	defer t.Stop()
	var clients lagClients
	defer clients.close()
	var committed int64 = -1
	progress := time.Now()
	for {
		st := clients.status(ctx, m.Conn, m.Brokers)
		m.mu.Lock()
		m.state = st
		m.mu.Unlock()
		if l := st.Lag; l != nil && m.Stuck > 0 {
			var sum int64
			for _, p := range l.Partitions {
				sum += p.Committed
			}
			if sum != committed || l.Total == 0 {
				committed, progress = sum, time.Now()
			} else if time.Since(progress) > m.Stuck && (m.Restarter == nil || m.Restarter()) {
				err := Restart(ctx, m.Conn, m.Cluster)
				m.Logger.Warn("Kafka engine restarted: lag without a commit", "lag", l.Total, "for", time.Since(progress).Round(time.Second), "err", err)
				m.mu.Lock()
				m.restarts++
				m.mu.Unlock()
				progress = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Last returns the state of the last refresh with the restarts so far.
func (m *Monitor) Last() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state
	st.Restarts = m.restarts
	return st
}

// Status reads the engine table's settings and asks the brokers for the
// group's lag; brokers, when set, replaces the address ClickHouse uses.
func Status(ctx context.Context, conn driver.Conn, brokers string) State {
	var clients lagClients
	defer clients.close()
	return clients.status(ctx, conn, brokers)
}

// lagClients keeps one Kafka client for the brokers last asked, so a
// monitor polling every few seconds does not reconnect each time.
type lagClients struct {
	brokers string
	kc      *kafka.Client
}

func (k *lagClients) get(brokers string) (*kafka.Client, error) {
	if k.kc != nil && k.brokers == brokers {
		return k.kc, nil
	}
	k.close()
	kc, err := kafka.Dial(brokers)
	if err != nil {
		return nil, err
	}
	k.kc, k.brokers = kc, brokers
	return kc, nil
}

func (k *lagClients) close() {
	if k.kc != nil {
		k.kc.Close()
		k.kc = nil
	}
}

func (k *lagClients) status(ctx context.Context, conn driver.Conn, brokers string) State {
	c, ok, err := Current(ctx, conn)
	if err != nil {
		return State{LagError: err.Error()}
	}
	if !ok {
		k.close()
		return State{}
	}
	st := State{Enabled: true, Config: &c}
	if brokers == "" {
		brokers = c.Brokers
	}
	kc, err := k.get(brokers)
	if err != nil {
		st.LagError = err.Error()
		return st
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if l, err := kc.Lag(lctx, c.Group, c.Topic); err != nil {
		st.LagError = err.Error()
	} else {
		st.Lag = &l
	}
	return st
}

// VerifyTopic runs Verify for the enabled topic; brokers, when set,
// replaces the address ClickHouse uses.
func VerifyTopic(ctx context.Context, conn driver.Conn, cluster, brokers string, from, to time.Time, fix bool) (VerifyReport, error) {
	c, ok, err := Current(ctx, conn)
	if err != nil {
		return VerifyReport{}, err
	}
	if !ok {
		return VerifyReport{}, errors.New("kafka is not enabled (clickagg kafka enable)")
	}
	if brokers == "" {
		brokers = c.Brokers
	}
	kc, err := kafka.Dial(brokers)
	if err != nil {
		return VerifyReport{}, err
	}
	defer kc.Close()
	return Verify(ctx, conn, cluster, from, to, func(fn func([]byte) error) error {
		return kc.Range(ctx, c.Topic, c.Group, from, to, func(r kafka.Record) error { return fn(r.Value) })
	}, fix)
}
