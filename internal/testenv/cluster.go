package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/schema"
	"github.com/clickagg/clickagg/services"
)

// ClusterDB is one database created ON CLUSTER on a local cluster.
type ClusterDB struct {
	Cluster  *services.Cluster
	Database string // "test_<random hex>", on every node
}

// Node is the database on one node, for the helpers that take a
// ClickHouseDB (Exec, QueryString, ...).
func (db ClusterDB) Node(n *services.ClickHouse) ClickHouseDB {
	return ClickHouseDB{HTTPURL: n.HTTPURL(), NativeAddr: n.NativeAddr(), Database: db.Database, Server: n,
		AnalystUser: services.AnalystUser, AnalystPassword: n.Analyst.Password}
}

// The 2 × 2 cluster shared by the tests of one test binary.
var sharedCluster struct {
	once sync.Once
	dir  string
	c    *services.Cluster
	err  error
}

// Cluster returns a fresh database, created ON CLUSTER and dropped at
// cleanup, on the 2 shards × 2 replicas cluster shared by the test binary
// (ZooKeeper and four 18.16 servers, started on first use, stopped by Main).
func Cluster(t testing.TB) ClusterDB {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("testenv.Cluster needs a TestMain that calls testenv.Main")
	}
	sharedCluster.once.Do(func() {
		sharedCluster.dir, sharedCluster.err = os.MkdirTemp("", "clickagg-cluster-")
		if sharedCluster.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*startTimeout)
		defer cancel()
		sharedCluster.c, sharedCluster.err = services.StartCluster(ctx, sharedCluster.dir, services.ClusterOptions{})
	})
	Must(t, sharedCluster.err)
	c := sharedCluster.c
	db := ClusterDB{Cluster: c, Database: "test_" + randomHex()}
	on := func(stmt string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := services.Query(ctx, c.Nodes[0].HTTPURL(), "", fmt.Sprintf(stmt, db.Database, c.Name))
		return err
	}
	if err := on("CREATE DATABASE %s ON CLUSTER %s"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := on("DROP DATABASE IF EXISTS %s ON CLUSTER %s"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return db
}

// OwnCluster starts a cluster for this test alone, for tests that kill or
// stop its nodes, with a fresh database on it, migrated when migrate is
// set. The cluster goes at cleanup.
func OwnCluster(t testing.TB, o services.ClusterOptions, migrate bool) ClusterDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := services.StartCluster(ctx, t.TempDir(), o)
	Must(t, err)
	t.Cleanup(c.Kill)
	db := ClusterDB{Cluster: c, Database: "test_" + randomHex()}
	if _, err := services.Query(ctx, c.Nodes[0].HTTPURL(), "", "CREATE DATABASE "+db.Database+" ON CLUSTER "+c.Name); err != nil {
		t.Fatal(err)
	}
	if migrate {
		if err := schema.MigrateUp(ctx, db.Options()); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// stopCluster ends the shared cluster; Main calls it.
func stopCluster() {
	if sharedCluster.c != nil {
		sharedCluster.c.Kill()
	}
	if sharedCluster.dir != "" {
		os.RemoveAll(sharedCluster.dir)
	}
}

// Options are the chclient settings of db: the cluster, its shards, every
// node's native address and the first node's HTTP interface.
func (db ClusterDB) Options() chclient.Options {
	var natives []string
	for _, n := range db.Cluster.Nodes {
		natives = append(natives, n.NativeAddr())
	}
	o := chclient.Options{HTTP: db.Cluster.Nodes[0].HTTPURL(), Native: strings.Join(natives, ","), Database: db.Database, Cluster: db.Cluster.Name}
	for s := 1; len(db.Cluster.Shard(s)) > 0; s++ {
		var urls []string
		for _, n := range db.Cluster.Shard(s) {
			urls = append(urls, n.HTTPURL())
		}
		o.Shards = append(o.Shards, urls)
	}
	return o
}

// MigratedCluster returns a fresh database on the shared cluster with the
// embedded schema applied ON CLUSTER.
func MigratedCluster(t testing.TB) ClusterDB {
	t.Helper()
	db := Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := schema.MigrateUp(ctx, db.Options()); err != nil {
		t.Fatal(err)
	}
	return db
}
