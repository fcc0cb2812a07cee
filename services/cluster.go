package services

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"
)

// ClusterName is the name of the local cluster, in every node's
// remote_servers and in ON CLUSTER statements.
const ClusterName = "clickagg"

// DefaultSessionTimeout is a node's ZooKeeper session timeout, ClickHouse's
// own default. A node killed with SIGKILL cannot rejoin before its session
// expires (its is_active node stays), so tests that kill nodes set less.
const DefaultSessionTimeout = 30 * time.Second

// Node is one ClickHouse server's place in a cluster.
type Node struct {
	Cluster          string
	Shard, Replica   int // from 1
	InterserverPort  int // replicas fetch parts from each other over HTTP here
	ZooKeeperPort    int
	SessionTimeoutMs int
	// Shards are the native ports of every replica of every shard, for
	// remote_servers (the same on every node).
	Shards [][]int
}

// Name is the node's replica name, e.g. "s1r2": unique in the cluster, as
// the replica macro must be.
func (n Node) Name() string { return fmt.Sprintf("s%dr%d", n.Shard, n.Replica) }

// ShardMacro is the shard macro, e.g. "01": the replicated tables' ZooKeeper
// paths take it.
func (n Node) ShardMacro() string { return fmt.Sprintf("%02d", n.Shard) }

// Cluster is a ClickHouse cluster on loopback: one ZooKeeper and Shards ×
// Replicas servers, each with the macros, remote_servers and distributed DDL
// that ON CLUSTER statements and Replicated tables need.
type Cluster struct {
	Name      string
	ZooKeeper *ZooKeeper
	Nodes     []*ClickHouse // shard by shard, replica by replica
}

// ClusterOptions shape a Cluster; the zero value is 2 shards × 2 replicas.
type ClusterOptions struct {
	Shards, Replicas int
	SessionTimeout   time.Duration // default DefaultSessionTimeout
}

func (o ClusterOptions) withDefaults() ClusterOptions {
	if o.Shards <= 0 {
		o.Shards = 2
	}
	if o.Replicas <= 0 {
		o.Replicas = 2
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	return o
}

// StartCluster starts a cluster in dir (zookeeper/ and one clickhouse-sNrM/
// per node) on free ports and waits until every node answers and reaches
// ZooKeeper. It dies with this process.
func StartCluster(ctx context.Context, dir string, o ClusterOptions) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	o = o.withDefaults()
	z, err := StartZooKeeper(ctx, filepath.Join(dir, "zookeeper"), 0)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: ClusterName, ZooKeeper: z}
	nodes, err := clusterNodes(dir, o, z.Port, Analyst{Password: randomPassword()})
	if err != nil {
		z.Kill()
		return nil, err
	}
	if err := startNodes(ctx, nodes, false); err != nil {
		for _, n := range nodes {
			n.Kill()
		}
		z.Kill()
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	c.Nodes = nodes
	return c, nil
}

// clusterNodes lays out the nodes of a new cluster on free ports.
func clusterNodes(dir string, o ClusterOptions, zkPort int, analyst Analyst) ([]*ClickHouse, error) {
	n := o.Shards * o.Replicas
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	shards := make([][]int, o.Shards)
	var nodes []*ClickHouse
	for s := range o.Shards {
		for r := range o.Replicas {
			i := len(nodes)
			node := &Node{Cluster: ClusterName, Shard: s + 1, Replica: r + 1, InterserverPort: ports[3*i+2],
				ZooKeeperPort: zkPort, SessionTimeoutMs: int(o.SessionTimeout / time.Millisecond)}
			nodes = append(nodes, &ClickHouse{Dir: filepath.Join(dir, "clickhouse-"+node.Name()),
				HTTPPort: ports[3*i], TCPPort: ports[3*i+1], Analyst: analyst, Node: node})
			shards[s] = append(shards[s], ports[3*i+1])
		}
	}
	for _, c := range nodes {
		c.Node.Shards = shards
	}
	return nodes, nil
}

// startNodes starts the nodes at once and waits until each answers and
// sees ZooKeeper.
func startNodes(ctx context.Context, nodes []*ClickHouse, detach bool) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, c := range nodes {
		wg.Go(func() {
			if errs[i] = c.start(ctx, detach); errs[i] == nil {
				errs[i] = waitReady(ctx, 60*time.Second, func() bool { return !c.running() }, c.pingZooKeeper)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pingZooKeeper checks that the node reaches ZooKeeper.
func (c *ClickHouse) pingZooKeeper(ctx context.Context) error {
	_, err := Query(ctx, c.HTTPURL(), "", "SELECT count() FROM system.zookeeper WHERE path = '/'")
	return err
}

// Shard returns the nodes of shard s (from 1).
func (c *Cluster) Shard(s int) []*ClickHouse {
	var out []*ClickHouse
	for _, n := range c.Nodes {
		if n.Node.Shard == s {
			out = append(out, n)
		}
	}
	return out
}

// Kill ends every node and ZooKeeper with SIGKILL.
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
	c.ZooKeeper.Kill()
}
