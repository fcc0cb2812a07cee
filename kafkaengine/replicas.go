package kafkaengine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/schema"
)

// inboxLag tells, on a cluster, whether some replica of kafka_inbox_local
// may lack rows committed more than lag ago, so that a read of the inbox
// may miss them whichever replica answers it:
//   - the replica is not active (down, or cut off from ZooKeeper);
//   - its queue holds a fetch created more than lag ago (the part is on
//     another replica only, perhaps one that is down);
//   - it has not pulled a log entry older than lag (just restarted, or
//     cut off).
//
// Those catch a replica falling behind, not every way one catches up: a
// replica back from an outage may drop the fetches of parts merged since
// and fetch the merged part under a merge entry, and one cloned after a
// long outage gets fetches created now. So the check also tells whether
// the replicas are quiet (all active, every log entry pulled, every queue
// empty); after a hold the drain waits for that (Drain.behind).
//
// It reads the replication state from ZooKeeper (system.zookeeper), where
// every replica of every shard is seen from the one node asked: which
// replica answers a Distributed read depends on the node it starts from
// (prefer_localhost_replica, error counts), and 18.16 has no
// clusterAllReplicas to ask each.
type inboxLag struct {
	conn    driver.Conn
	cluster string
}

// check returns why a replica is behind ("" if none is) and whether all
// are quiet.
func (l inboxLag) check(ctx context.Context, lag time.Duration) (reason string, quiet bool, err error) {
	paths, err := l.paths(ctx)
	if err != nil {
		return "", false, err
	}
	old := uint32(time.Now().Add(-lag).Unix())
	quiet = true
	for _, p := range paths {
		log, err := l.children(ctx, p+"/log")
		if err != nil {
			return "", false, err
		}
		replicas, err := l.children(ctx, p+"/replicas")
		if err != nil {
			return "", false, err
		}
		for r := range replicas {
			node, err := l.children(ctx, p+"/replicas/"+r)
			if err != nil {
				return "", false, err
			}
			if _, ok := node["is_active"]; !ok {
				return fmt.Sprintf("replica %s of %s is not active", r, p), false, nil
			}
			pointer, _ := strconv.ParseUint(strings.TrimSpace(node["log_pointer"].value), 10, 64)
			for name, e := range log {
				i, err := strconv.ParseUint(strings.TrimPrefix(name, "log-"), 10, 64)
				if err != nil || i < pointer {
					continue
				}
				if e.ctime < old {
					return fmt.Sprintf("replica %s of %s has not pulled %s", r, p, name), false, nil
				}
				quiet = false
			}
			// The time a fetch was created is in its text (in the server's
			// time zone, as toDateTime reads it back): the znode's own
			// ctime is when this replica pulled it, which for a replica
			// just back is now.
			var entries uint64
			var oldest uint32
			err = l.conn.QueryRow(ctx, "SELECT count(), toUInt32(minIf(toDateTime(extract(value, "+
				"'create_time: ([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})')), position(value, '\\nget\\n') > 0)) "+
				"FROM system.zookeeper WHERE path = ?", p+"/replicas/"+r+"/queue").Scan(&entries, &oldest)
			if err != nil {
				return "", false, fmt.Errorf("read the queue of %s in ZooKeeper: %w", r, err)
			}
			if oldest != 0 && oldest < old {
				return fmt.Sprintf("replica %s of %s has a fetch queued since %s", r, p, time.Unix(int64(oldest), 0).UTC().Format(time.RFC3339)), false, nil
			}
			quiet = quiet && entries == 0
		}
	}
	return "", quiet, nil
}

// wait returns once every replica has every part created before it was
// called (no log entry left to pull, no fetch queued), so that whichever
// replica answers a read has every row committed before; or an error
// naming the replica that is behind after limit.
func (l inboxLag) wait(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		// A negative lag takes in entries of this very second too (the
		// times in ZooKeeper are whole seconds).
		reason, _, err := l.check(ctx, -time.Second)
		if err != nil || reason == "" {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kafka_inbox replicas not in step after %v: %s", limit, reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// paths are the ZooKeeper paths of kafka_inbox_local, one per shard.
func (l inboxLag) paths(ctx context.Context) ([]string, error) {
	out, err := chclient.Strings(ctx, l.conn, "SELECT DISTINCT zookeeper_path FROM cluster('"+l.cluster+"', system, replicas) "+
		"WHERE database = currentDatabase() AND table = 'kafka_inbox"+schema.LocalSuffix+"'")
	if err != nil {
		return nil, fmt.Errorf("find the inbox replicas: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("find the inbox replicas: no kafka_inbox%s on cluster %s", schema.LocalSuffix, l.cluster)
	}
	return out, nil
}

type znode struct {
	value string
	ctime uint32
}

// children lists the znodes under path with their values.
func (l inboxLag) children(ctx context.Context, path string) (map[string]znode, error) {
	rows, err := l.conn.Query(ctx, "SELECT name, value, toUInt32(ctime) FROM system.zookeeper WHERE path = ?", path)
	if err != nil {
		return nil, fmt.Errorf("read %s in ZooKeeper: %w", path, err)
	}
	defer rows.Close()
	out := map[string]znode{}
	for rows.Next() {
		var name string
		var z znode
		if err := rows.Scan(&name, &z.value, &z.ctime); err != nil {
			return nil, fmt.Errorf("read %s in ZooKeeper: %w", path, err)
		}
		out[name] = z
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s in ZooKeeper: %w", path, err)
	}
	return out, nil
}
