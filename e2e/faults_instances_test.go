package e2e

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
)

// TestFaultKillOneOfTwo: two instances with --dedup-shared under steady
// ingest, the clients spread over both and turning to the other when theirs
// does not answer (a load balancer's retry); one is killed with SIGKILL and
// started again. The survivor keeps answering, the resends of the killed
// one's unanswered requests count once (its holds on their ids are settled
// from ClickHouse once its liveness key is gone), and the restarted one
// takes requests again.
func TestFaultKillOneOfTwo(t *testing.T) {
	db := testenv.Migrated(t)
	rd := testenv.Redis(t)
	a := serveProc(t, db, rd.Addr(), "--dedup-shared")
	b := serveProc(t, db, rd.Addr(), "--dedup-shared")

	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var inflight atomic.Int64
	var wg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var feeders []*feeder
	feed := func(seed uint64, url, alt string) {
		f := &feeder{url: url, alt: alt, hc: hc, l: l, prefix: "k2", size: 300, resend: 0.2, netRetry: 50 * time.Millisecond, inflight: &inflight}
		feeders = append(feeders, f)
		wg.Go(func() { f.run(ctx, stop, seed) })
	}
	for i := range 6 {
		if i%2 == 0 {
			feed(uint64(i+1), a.url("/v1/events"), b.url("/v1/events"))
		} else {
			feed(uint64(i+1), b.url("/v1/events"), a.url("/v1/events"))
		}
	}
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		cancel()
		wg.Wait()
	}()

	waitFor(t, 30*time.Second, "3000 events acknowledged", func() bool { return l.ackedCount() >= 3000 })
	waitFor(t, 10*time.Second, "requests in flight", func() bool { return inflight.Load() >= 3 })
	killAt := time.Now()
	a.kill()
	n := l.ackedCount()
	waitFor(t, 60*time.Second, "3000 more events acknowledged by the survivor", func() bool { return l.ackedCount() >= n+3000 })
	firstAck := l.firstAckAfter(killAt)
	startTook := a.start()
	// New clients on the restarted instance.
	feed(7, a.url("/v1/events"), b.url("/v1/events"))
	feed(8, a.url("/v1/events"), b.url("/v1/events"))
	n = l.ackedCount()
	waitFor(t, 60*time.Second, "3000 more events acknowledged after the restart", func() bool { return l.ackedCount() >= n+3000 })
	waitFor(t, 30*time.Second, "the restarted instance taking events", func() bool { return a.ingestStatus().Collector.Accepted > 0 })
	stopped = true
	noAnswer := endFeeders(t, ctx, stop, &wg, l, feeders)
	checkStored(t, db, l.events())
	settled := 0
	if log, err := os.ReadFile(b.log); err == nil {
		settled = strings.Count(string(log), "settled the holds of an instance gone")
	}
	t.Logf("one of two instances killed: the survivor's first 200 %v after; %d attempts without an answer, resent to the other; the survivor settled the killed one's holds %d times; restarted in %v and taking events again; %d events acknowledged, each counted once (%d resends of acknowledged events and %d events committed under an unanswered or refused attempt came back as duplicates)",
		firstAck.Sub(killAt).Round(time.Millisecond), noAnswer, settled, startTook.Round(time.Millisecond), len(l.acked), l.resent, l.lateDups)
}

// TestFaultKillLeaseHolder: three instances with --dedup-shared on the 2 x 2
// cluster, the lease in its ZooKeeper and a reconciliation every second;
// the holder is killed with SIGKILL (no goodbye: its session ends only when
// ZooKeeper expires it). Another takes the lease within the lease's TTL and
// reconciles, never two at once; the killed one, started again, rejoins
// without taking the lease from the new holder.
func TestFaultKillLeaseHolder(t *testing.T) {
	cdb := testenv.MigratedCluster(t)
	o := cdb.Options()
	rd := testenv.Redis(t)
	const ttl = 2 * time.Second // the test ZooKeeper's shortest session
	var ps []*proc
	for range 3 {
		ps = append(ps, serveProc(t, cdb.Node(cdb.Cluster.Nodes[0]), rd.Addr(),
			"--clickhouse-cluster", o.Cluster, "--clickhouse-native", o.Native, "--clickhouse-shards", chclient.FormatShards(o.Shards),
			"--zookeeper", cdb.Cluster.ZooKeeper.Addr(), "--dedup-shared", "--lease-ttl", ttl.String(),
			"--no-reconcile=false", "--reconcile-every", "1s", "--reconcile-lookback", "10m"))
	}
	count := func(p *proc, what string) int {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), what)
	}
	const taken, reconciled = `msg="lease taken`, "msg=reconciled "
	holders := func() (n int, who *proc) {
		for _, p := range ps {
			if count(p, taken) > count(p, "msg=\"lease given up") {
				n, who = n+1, p
			}
		}
		return n, who
	}
	waitFor(t, 20*time.Second, "one instance holding the lease", func() bool { n, _ := holders(); return n == 1 })
	_, first := holders()
	runs := map[*proc]int{}
	for _, p := range ps {
		runs[p] = count(p, reconciled)
	}
	time.Sleep(3 * time.Second)
	for _, p := range ps {
		if got := count(p, reconciled) - runs[p]; (p == first) != (got > 0) {
			t.Errorf("reconciled %d times in 3 s, holding the lease: %v", got, p == first)
		}
	}

	first.kill()
	killAt := time.Now()
	rest := slices.DeleteFunc(slices.Clone(ps), func(p *proc) bool { return p == first })
	var second *proc
	waitFor(t, 3*ttl, "another instance taking the lease", func() bool {
		for _, p := range rest {
			if count(p, taken) > 0 {
				second = p
				return true
			}
		}
		return false
	})
	took := time.Since(killAt)
	n := count(second, reconciled)
	waitFor(t, 10*time.Second, "the new holder reconciling", func() bool { return count(second, reconciled) > n })
	for _, p := range rest {
		if p != second && count(p, taken) > 0 {
			t.Error("two survivors took the lease")
		}
	}

	// Started again, the killed one serves and leaves the lease where it is.
	before := count(first, taken)
	first.start()
	time.Sleep(2 * ttl)
	if count(first, taken) != before {
		t.Error("the restarted instance took the lease from the new holder")
	}
	if count(second, "msg=\"lease given up") > 0 {
		t.Error("the new holder lost the lease to the restarted instance")
	}
	t.Logf("lease holder killed: another took the lease %v after (TTL %v, ZooKeeper's session expiry) and reconciled; the killed one restarted without taking it", took.Round(time.Millisecond), ttl)
}
