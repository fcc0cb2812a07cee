package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/schema"
)

// ingest is where the collector's rows go: one ingestor, or a Router over
// a cluster's shards.
type ingest interface {
	collector.Adder
	Close(ctx context.Context) error
	Stats() ingestor.Stats
}

// openIngest builds the ingest path of ch and the transport of dead
// letters. One server: an ingestor posting to its HTTP interface. A
// cluster: one ingestor per shard, into the local events table of the
// shard's replicas (Failover; identical blocks resent rather than probed,
// the Replicated table stores them once), rows routed by event_id; dead
// letters to any node's local table. compress: blocks are LZ4-framed
// (Config.CompressInserts).
func openIngest(ctx context.Context, conn driver.Conn, ch chclient.Options, o ingestor.Options, compress bool) (ingest, ingestor.Transport, error) {
	ho := ingestor.HTTPOptions{URL: ch.HTTP, Database: ch.Database, User: ch.User, Password: ch.Password, TLS: ch.TLS, NoCompression: !compress}
	if ch.Cluster == "" {
		tr, err := ingestor.NewHTTP(ho)
		if err != nil {
			return nil, nil, err
		}
		return ingestor.New(tr, o), tr, nil
	}
	if err := checkShards(ctx, conn, ch, ho); err != nil {
		return nil, nil, err
	}
	o.Table = "events" + schema.LocalSuffix
	o.Deduplicated = true
	var shards []*ingestor.Ingestor
	var all []string
	for _, urls := range ch.Shards {
		f, err := ingestor.NewFailover(urls, ho)
		if err != nil {
			return nil, nil, err
		}
		shards = append(shards, ingestor.New(f, o))
		all = append(all, urls...)
	}
	dead, err := ingestor.NewFailover(all, ho)
	if err != nil {
		return nil, nil, err
	}
	return ingestor.NewRouter(shards), dead, nil
}

// checkShards holds the configured shards to the cluster's: as many as
// remote_servers has, the replicas of each answering with one shard macro,
// a different one per shard. Rows routed to the wrong node would land on a
// shard the Distributed tables do not expect them on.
func checkShards(ctx context.Context, conn driver.Conn, ch chclient.Options, ho ingestor.HTTPOptions) error {
	if len(ch.Shards) == 0 {
		return fmt.Errorf("cluster %s: no shards to insert into (--clickhouse-shards)", ch.Cluster)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = ?", ch.Cluster).Scan(&n); err != nil {
		return fmt.Errorf("cluster %s: %w", ch.Cluster, err)
	}
	if int(n) != len(ch.Shards) {
		return fmt.Errorf("cluster %s has %d shards in remote_servers, --clickhouse-shards names %d", ch.Cluster, n, len(ch.Shards))
	}
	seen := map[string]int{}
	for i, urls := range ch.Shards {
		for _, u := range urls {
			ho.URL = u
			h, err := ingestor.NewHTTP(ho)
			if err != nil {
				return err
			}
			macro, err := h.Query(ctx, "SELECT substitution FROM system.macros WHERE macro = 'shard'")
			if err != nil {
				return fmt.Errorf("shard %d replica %s: %w", i+1, u, err)
			}
			macro = strings.TrimSpace(macro)
			if j, ok := seen[macro]; ok && j != i {
				return fmt.Errorf("--clickhouse-shards: %s (shard macro %q) is a node of shard %d, named in shard %d", u, macro, j+1, i+1)
			}
			seen[macro] = i
		}
	}
	if len(seen) != len(ch.Shards) {
		return fmt.Errorf("--clickhouse-shards: the replicas of one shard answer with different shard macros")
	}
	return nil
}
