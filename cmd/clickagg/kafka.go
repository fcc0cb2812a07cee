package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/kafka"
	"github.com/clickagg/clickagg/kafkaengine"
)

// kafkaFlags name the topic ClickHouse consumes.
func (f *flags) kafka(c *kafkaengine.Config) {
	f.str(&c.Brokers, "brokers", "CLICKAGG_KAFKA_BROKERS", "", "Kafka brokers as ClickHouse reaches them, host:port[,host:port]")
	f.str(&c.Topic, "topic", "CLICKAGG_KAFKA_TOPIC", "ad-events", "topic of JSON events, one per message")
	f.str(&c.Group, "group", "CLICKAGG_KAFKA_GROUP", "clickagg", "consumer group of ClickHouse's Kafka engine")
	f.int(&c.Consumers, "consumers", "CLICKAGG_KAFKA_CONSUMERS", 1, "kafka_num_consumers: consumers in ClickHouse (at most the partitions and its cores)")
	f.int(&c.MaxBlockSize, "block-size", "CLICKAGG_KAFKA_BLOCK_SIZE", 65536, "kafka_max_block_size: messages per block at most")
}

func runKafka(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("kafka", "enable | disable | status | verify", stderr)
	var o chclient.Options
	f.clickhouse(&o)
	var c kafkaengine.Config
	f.kafka(&c)
	var from, to string
	var fix bool
	f.StringVar(&from, "from", "", "verify: start of the range of message timestamps, RFC 3339 (default: an hour before --to)")
	f.StringVar(&to, "to", "", "verify: end of the range, RFC 3339 (default: now)")
	f.BoolVar(&fix, "fix", false, "verify: land the messages missing from kafka_inbox so that serve drains them")
	if err := f.parse(args, 1); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	conn, err := chclient.Open(o)
	if err != nil {
		return err
	}
	defer conn.Close()
	switch f.arg(0) {
	case "enable":
		if err := kafkaengine.Enable(ctx, conn, c); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "ClickHouse consumes %s from %s as group %s into %s.kafka_inbox; 'clickagg serve' drains it\n", c.Topic, c.Brokers, c.Group, o.Database)
	case "disable":
		if err := kafkaengine.Disable(ctx, conn); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "Kafka engine table dropped; kafka_inbox keeps what landed")
	case "verify":
		end := time.Now()
		if to != "" {
			if end, err = time.Parse(time.RFC3339, to); err != nil {
				return fmt.Errorf("--to: %w", err)
			}
		}
		start := end.Add(-time.Hour)
		if from != "" {
			if start, err = time.Parse(time.RFC3339, from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
		}
		// --brokers, when given, is how this machine reaches them.
		rep, err := verifyKafka(ctx, conn, c.Brokers, start, end, fix)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, rep.String())
	case "status":
		st := kafkaStatus(ctx, conn, c.Brokers)
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(stdout, string(b))
	default:
		f.Usage()
		return errUsage
	}
	return nil
}

// kafkaState is the Kafka part of /v1/ingest/status and 'kafka status'.
type kafkaState struct {
	Enabled  bool                    `json:"enabled"`
	Config   *kafkaengine.Config     `json:"config,omitempty"`
	Lag      *kafka.Lag              `json:"lag,omitempty"`
	LagError string                  `json:"lag_error,omitempty"`
	Drain    *kafkaengine.DrainStats `json:"drain,omitempty"`
	Verify   *verifyResult           `json:"verify,omitempty"`
	// Restarts counts the engine restarts by serve's watchdog.
	Restarts int64 `json:"engine_restarts"`
}

// verifyResult is the last scheduled verification.
type verifyResult struct {
	At     time.Time                 `json:"at"`
	Report *kafkaengine.VerifyReport `json:"report,omitempty"`
	Err    string                    `json:"error,omitempty"`
}

// kafkaVerifier compares the recent topic with kafka_inbox on a schedule
// and lands what the Kafka engine lost.
type kafkaVerifier struct {
	conn          driver.Conn
	brokers       string
	every, window time.Duration
	log           *slog.Logger

	mu   sync.Mutex
	prev *verifyResult
}

func (v *kafkaVerifier) run(ctx context.Context) {
	if v.every <= 0 {
		return
	}
	t := time.NewTicker(v.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, on, err := kafkaengine.Current(ctx, v.conn); err != nil || !on {
			continue
		}
		now := time.Now()
		rep, err := verifyKafka(ctx, v.conn, v.brokers, now.Add(-v.window), now, true)
		r := &verifyResult{At: now, Report: &rep}
		switch {
		case err != nil && ctx.Err() == nil:
			r.Err = err.Error()
			v.log.Warn("kafka verify", "err", err)
		case rep.Missing > 0:
			v.log.Warn("kafka verify landed messages the Kafka engine lost", "missing", rep.Missing, "from", rep.From, "to", rep.To)
		}
		v.mu.Lock()
		v.prev = r
		v.mu.Unlock()
	}
}

func (v *kafkaVerifier) last() *verifyResult {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.prev
}

// kafkaMonitor refreshes the Kafka state in the background, so that a
// status request never waits for brokers that do not answer.
type kafkaMonitor struct {
	conn    driver.Conn
	brokers string
	every   time.Duration
	// stuck is how long the group may have lag without committing before
	// the engine is restarted (18.16's consumer can sit idle); 0: never.
	stuck time.Duration
	log   *slog.Logger

	mu       sync.Mutex
	state    kafkaState
	restarts int64
}

func (m *kafkaMonitor) run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	var clients kafkaClients
	defer clients.close()
	var committed int64 = -1
	progress := time.Now()
	for {
		st := clients.status(ctx, m.conn, m.brokers)
		m.mu.Lock()
		m.state = st
		m.mu.Unlock()
		if l := st.Lag; l != nil && m.stuck > 0 {
			var sum int64
			for _, p := range l.Partitions {
				sum += p.Committed
			}
			if sum != committed || l.Total == 0 {
				committed, progress = sum, time.Now()
			} else if time.Since(progress) > m.stuck {
				err := kafkaengine.Restart(ctx, m.conn)
				m.log.Warn("Kafka engine restarted: lag without a commit", "lag", l.Total, "for", time.Since(progress).Round(time.Second), "err", err)
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

func (m *kafkaMonitor) last() kafkaState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state
	st.Restarts = m.restarts
	return st
}

// kafkaStatus reads the engine table's settings and asks the brokers for
// the group's lag; brokers, when set, replaces the address ClickHouse uses.
func kafkaStatus(ctx context.Context, conn driver.Conn, brokers string) kafkaState {
	var clients kafkaClients
	defer clients.close()
	return clients.status(ctx, conn, brokers)
}

// kafkaClients keeps one Kafka client for the brokers last asked, so a
// monitor polling every few seconds does not reconnect each time.
type kafkaClients struct {
	brokers string
	kc      *kafka.Client
}

func (k *kafkaClients) get(brokers string) (*kafka.Client, error) {
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

func (k *kafkaClients) close() {
	if k.kc != nil {
		k.kc.Close()
		k.kc = nil
	}
}

func (k *kafkaClients) status(ctx context.Context, conn driver.Conn, brokers string) kafkaState {
	c, ok, err := kafkaengine.Current(ctx, conn)
	if err != nil {
		return kafkaState{LagError: err.Error()}
	}
	if !ok {
		k.close()
		return kafkaState{}
	}
	st := kafkaState{Enabled: true, Config: &c}
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

// verifyKafka runs kafkaengine.Verify for the enabled topic; brokers, when
// set, replaces the address ClickHouse uses.
func verifyKafka(ctx context.Context, conn driver.Conn, brokers string, from, to time.Time, fix bool) (kafkaengine.VerifyReport, error) {
	c, ok, err := kafkaengine.Current(ctx, conn)
	if err != nil {
		return kafkaengine.VerifyReport{}, err
	}
	if !ok {
		return kafkaengine.VerifyReport{}, errors.New("kafka is not enabled (clickagg kafka enable)")
	}
	if brokers == "" {
		brokers = c.Brokers
	}
	kc, err := kafka.Dial(brokers)
	if err != nil {
		return kafkaengine.VerifyReport{}, err
	}
	defer kc.Close()
	return kafkaengine.Verify(ctx, conn, from, to, func(fn func([]byte) error) error {
		return kc.Range(ctx, c.Topic, c.Group, from, to, func(r kafka.Record) error { return fn(r.Value) })
	}, fix)
}
