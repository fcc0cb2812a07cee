package kafkaengine

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-faster/city"

	"github.com/clickagg/clickagg/chclient"
)

// VerifyReport compares a range of a topic with what landed in kafka_inbox.
type VerifyReport struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Messages int       `json:"messages"` // read back from the topic
	// Unverifiable messages cannot be compared: 18.16 stores them changed
	// (CR, LF or DEL inside, or spaces around), so they are left alone.
	Unverifiable int  `json:"unverifiable"`
	Missing      int  `json:"missing"` // in the topic, never landed
	Fixed        bool `json:"fixed"`   // the missing ones were landed for the drain
}

func (r VerifyReport) String() string {
	s := fmt.Sprintf("kafka verify %s .. %s: %d messages, %d missing from kafka_inbox, %d not comparable",
		r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), r.Messages, r.Missing, r.Unverifiable)
	if r.Fixed && r.Missing > 0 {
		s += "; landed again for the drain"
	}
	return s
}

// VerifySlack widens the inbox side of Verify: producers' clocks and the
// consumer's lag put a message's received_at apart from its timestamp.
const VerifySlack = time.Hour

// VerifyInStep bounds how long Verify waits, on a cluster, for the
// replicas of the inbox to hold the same rows.
const VerifyInStep = 30 * time.Second

// Verify checks that every message of a topic range landed in kafka_inbox:
// ClickHouse's Kafka engine on old servers can lose one now and then (its
// issues #1690, #4736, #4890; seen here as 1 in 200 000 in some runs). read
// passes the range's messages (kafka.Client.Range). With fix, the missing
// ones are written to kafka_inbox, and the drain counts them like any other
// (resends of events already counted stay duplicates). It reads the range
// twice when something is missing; memory is about 24 bytes per message of
// the range. cluster is the remote_servers name the database lives on, if
// any: it compares only once every replica of the inbox has what the group
// committed (an error after VerifyInStep otherwise: a replica down), and
// the landed messages reach their shards before it returns.
func Verify(ctx context.Context, conn driver.Conn, cluster string, from, to time.Time, read func(fn func(value []byte) error) error, fix bool) (VerifyReport, error) {
	rep := VerifyReport{From: from, To: to}
	on := chclient.Options{Cluster: cluster}
	// First pass: how often each message is in the topic, by hash only, so
	// memory is about 24 bytes per message of the range.
	topic := map[uint64]int{}
	err := read(func(v []byte) error {
		rep.Messages++
		if !comparable(v) {
			rep.Unverifiable++
		} else {
			topic[city.CH64(v)]++
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	// The messages read were committed by the group, so each is in some
	// replica's inbox; on a cluster, wait until it is in every replica's,
	// or the one read would have it missing and land it a second time.
	if cluster != "" {
		if err := (inboxLag{conn, cluster}).wait(ctx, VerifyInStep); err != nil {
			return rep, err
		}
	}
	rows, err := conn.Query(ctx, "SELECT cityHash64(raw) AS h, count() FROM kafka_inbox "+
		"WHERE received_at >= toDateTime(?) GROUP BY h"+on.ReadSettings(), uint32(from.Add(-VerifySlack).Unix()))
	if err != nil {
		return rep, fmt.Errorf("read kafka_inbox: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h, n uint64
		if err := rows.Scan(&h, &n); err != nil {
			return rep, fmt.Errorf("read kafka_inbox: %w", err)
		}
		if _, ok := topic[h]; ok {
			topic[h] -= int(n)
		}
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("read kafka_inbox: %w", err)
	}
	for h, n := range topic {
		if n <= 0 {
			delete(topic, h)
		} else {
			rep.Missing += n
		}
	}
	if !fix || rep.Missing == 0 {
		return rep, nil
	}
	// Second pass: the text of the missing ones.
	var missing []string
	err = read(func(v []byte) error {
		if comparable(v) {
			if h := city.CH64(v); topic[h] > 0 {
				topic[h]--
				missing = append(missing, string(v))
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	// In pieces under the server's max_query_size (256 KiB).
	for len(missing) > 0 {
		n, size := 0, 0
		for n < len(missing) && (n == 0 || size+len(missing[n]) < 128<<10) {
			size += len(missing[n]) + 4
			n++
		}
		if err := conn.Exec(on.WriteContext(ctx), "INSERT INTO kafka_inbox (received_at, id, raw) SELECT now(), rand64(), arrayJoin(?)", missing[:n]); err != nil {
			return rep, fmt.Errorf("land missing messages: %w", err)
		}
		missing = missing[n:]
	}
	rep.Fixed = true
	return rep, nil
}

// comparable reports whether 18.16's CSV reading keeps v as it is.
func comparable(v []byte) bool {
	if len(v) == 0 || bytes.ContainsAny(v, "\r\n\x7f") {
		return false
	}
	first, last := v[0], v[len(v)-1]
	return first != ' ' && first != '\t' && last != ' ' && last != '\t'
}
