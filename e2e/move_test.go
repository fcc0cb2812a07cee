package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
)

// moveStatements are README's "Moving a single server's data onto a
// cluster", run on the cluster's first node after `clickagg migrate up`
// there, with insert_distributed_sync = 1 for the session (a SETTINGS clause
// would be the SELECT's): the old server's events through the Distributed
// table, which routes them by event_id and whose shards' views rebuild
// every aggregate and the recent ids, then its dead letters. OLD is the
// old server's native host:port, OLDDB its database.
var moveStatements = []string{
	"INSERT INTO events SELECT * FROM remote('OLD', OLDDB, events)",
	"INSERT INTO dead_letters SELECT * FROM remote('OLD', OLDDB, dead_letters)",
}

// moveDone is the README's check that the move has reached every replica:
// nothing left to fetch on any node.
const moveDone = "SELECT count() FROM cluster('clickagg', system, replication_queue) WHERE database = currentDatabase()"

// TestMoveToCluster: a database filled on one server, moved with
// moveStatements onto a 2 x 2 cluster, answers every route as before, with
// each event on its shard.
func TestMoveToCluster(t *testing.T) {
	one := newStack(t, 0)
	now := time.Now().UTC()
	lines, valid := mixedStream(rand.New(rand.NewPCG(21, 22)), 0, 2000, now, 2*time.Hour)
	one.send(lines, 200, 2)

	db := testenv.MigratedCluster(t)
	first := db.Cluster.Nodes[0]
	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := clickhouse.Context(context.Background(), clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	for _, stmt := range moveStatements {
		if err := conn.Exec(ctx, strings.NewReplacer("OLDDB", one.db.Database, "OLD", one.db.NativeAddr).Replace(stmt)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "the moved rows replicated", func() bool { return testenv.QueryString(t, db.Node(first), moveDone) == "0" })
	cl := &stack{t: t, cluster: &db, redisAddr: testenv.Redis(t).Addr()}
	cl.start()
	t.Cleanup(func() { cl.stop() })

	from, to := now.Add(-2*time.Hour-time.Minute).Truncate(time.Minute), now.Truncate(time.Minute).Add(time.Minute)
	rng := "from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339))
	for _, path := range []string{
		"/v1/metrics?group_by=country,ad_format&" + rng,
		"/v1/metrics?group_by=minute,ad_id&" + rng,
		"/v1/ads/top?n=20&metric=impressions&" + rng,
		"/v1/ads/ad03/series?granularity=1m&" + rng,
	} {
		if a, b := uncached(t, one.url+path), uncached(t, cl.url+path); !reflect.DeepEqual(a, b) {
			t.Errorf("%s: the server and the cluster it moved to differ\none:     %.300v\ncluster: %.300v", path, a, b)
		}
	}
	for s := 1; s <= 2; s++ {
		if got := testenv.QueryString(t, db.Node(db.Cluster.Shard(s)[0]), fmt.Sprintf("SELECT countIf(cityHash64(event_id) %% 2 != %d) FROM events_local", s-1)); got != "0" {
			t.Errorf("shard %d holds %s events of the other shard", s, got)
		}
	}
	wantDead := testenv.QueryString(t, one.db, "SELECT count() FROM dead_letters")
	if got := testenv.QueryString(t, db.Node(first), "SELECT count() FROM dead_letters"); got != wantDead || got == "0" {
		t.Errorf("dead letters: %s moved, %s on the server", got, wantDead)
	}
	// A resend of a moved event counts once: the new instance reloaded the
	// moved ids.
	if a := cl.post([][]byte{valid[0].json()}); a.Duplicates != 1 {
		t.Errorf("a moved event sent again: %+v, want a duplicate", a)
	}
}
