package services_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/services"
)

// TestCluster: a 2 × 2 cluster runs ON CLUSTER DDL, replicates a part
// from the replica that took the insert to the other one of its shard, and
// answers through a Distributed table over both shards.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := services.StartCluster(ctx, t.TempDir(), services.ClusterOptions{})
	testenv.Must(t, err)
	t.Cleanup(c.Kill)
	t.Logf("2 x 2 cluster up in %v", time.Since(began).Round(time.Millisecond))
	if len(c.Nodes) != 4 || len(c.Shard(1)) != 2 || len(c.Shard(2)) != 2 {
		t.Fatalf("nodes %d", len(c.Nodes))
	}
	q := func(n *services.ClickHouse, sql string) string {
		t.Helper()
		out, err := services.Query(ctx, n.HTTPURL(), "", sql)
		if err != nil {
			t.Fatalf("%s on %s: %v", sql, n.Node.Name(), err)
		}
		return strings.TrimSpace(out)
	}
	first := c.Nodes[0]
	for _, ddl := range []string{
		"CREATE DATABASE IF NOT EXISTS ct ON CLUSTER clickagg",
		"CREATE TABLE ct.t_local ON CLUSTER clickagg (n UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/ct/t_local', '{replica}') ORDER BY n",
		"CREATE TABLE ct.t ON CLUSTER clickagg AS ct.t_local ENGINE = Distributed(clickagg, ct, t_local, n)",
	} {
		q(first, ddl)
	}
	s1, s2 := c.Shard(1), c.Shard(2)
	q(s1[0], "INSERT INTO ct.t_local SELECT number FROM system.numbers LIMIT 10")
	q(s2[1], "INSERT INTO ct.t_local SELECT number FROM system.numbers LIMIT 5")
	deadline := time.Now().Add(30 * time.Second)
	for q(s1[1], "SELECT count() FROM ct.t_local") != "10" || q(s2[0], "SELECT count() FROM ct.t_local") != "5" {
		if time.Now().After(deadline) {
			t.Fatal("parts not replicated within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range c.Nodes {
		if got := q(n, "SELECT count() FROM ct.t"); got != "15" {
			t.Errorf("%s: Distributed count %s, want 15", n.Node.Name(), got)
		}
		if got := q(n, "SELECT substitution FROM system.macros WHERE macro IN ('shard', 'replica') ORDER BY macro"); got != n.Node.Name()+"\n"+n.Node.ShardMacro() {
			t.Errorf("%s: macros %q", n.Node.Name(), got)
		}
	}
}

// TestUpCluster: services up with shards and replicas starts ZooKeeper and
// every node, prints each as KEY=value lines, is idempotent, finds the
// cluster without being told again, refuses another shape, and down stops
// every process.
func TestUpCluster(t *testing.T) {
	dir := t.TempDir()
	o := services.Options{Dir: dir, NoInstall: true, Shards: 2, Replicas: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := services.Up(ctx, o)
	testenv.Must(t, err)
	t.Cleanup(func() { services.Down(context.Background(), services.Options{Dir: dir}) })
	if s.Cluster != services.ClusterName || !s.ZooKeeperUp || !s.ClickHouseUp || !s.RedisUp || len(s.Nodes) != 4 {
		t.Fatalf("status %+v", s)
	}
	env := s.Env()
	for _, want := range []string{
		"CLICKAGG_CLICKHOUSE_CLUSTER=clickagg\n", "CLICKAGG_ZOOKEEPER_UP=true\n",
		"CLICKAGG_NODE_S2R1_SHARD=2\n", "CLICKAGG_NODE_S2R1_REPLICA=1\n", "CLICKAGG_NODE_S2R1_HTTP=" + s.Nodes[2].HTTP + "\n",
		"CLICKAGG_NODE_S2R1_NATIVE=" + s.Nodes[2].Native + "\n", "CLICKAGG_NODE_S1R2_UP=true\n",
		"CLICKAGG_CLICKHOUSE_HTTP=" + s.Nodes[0].HTTP + "\n",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("status lacks %q:\n%s", want, env)
		}
	}
	// The database is on every node.
	for _, n := range s.Nodes {
		if out, err := services.Query(ctx, n.HTTP, "", "SELECT count() FROM system.databases WHERE name = 'clickagg'"); err != nil || strings.TrimSpace(out) != "1" {
			t.Errorf("%s: clickagg database %q %v", n.Name, out, err)
		}
	}
	// Up again without the shape: the same cluster, nothing restarted.
	again, err := services.Up(ctx, services.Options{Dir: dir, NoInstall: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range again.Nodes {
		if n.PID != s.Nodes[i].PID || n.HTTP != s.Nodes[i].HTTP {
			t.Errorf("node %s changed: %+v, was %+v", n.Name, n, s.Nodes[i])
		}
	}
	if _, err := services.Up(ctx, services.Options{Dir: dir, NoInstall: true, Shards: 3, Replicas: 1}); err == nil || !strings.Contains(err.Error(), "2 x 2 cluster") {
		t.Errorf("another shape: %v", err)
	}
	if err := services.Down(ctx, services.Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	down, err := services.Read(services.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if down.ZooKeeperUp || down.ClickHouseUp || down.RedisUp {
		t.Errorf("after down: %+v", down)
	}
	for _, n := range s.Nodes {
		if syscall.Kill(n.PID, 0) == nil {
			t.Errorf("%s (pid %d) still runs", n.Name, n.PID)
		}
	}
}
