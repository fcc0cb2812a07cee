package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

// TestClusterAnswersEqual: the same stream (late events, resends, broken
// events) sent in the same batches to one server and to a 2 x 2 cluster
// gets the same ingest answers, and every query route answers the same,
// field by field; on the cluster each event is on the shard its event_id
// hashes to, replicated to the shard's other replica, and nowhere else.
func TestClusterAnswersEqual(t *testing.T) {
	one := newStack(t, 0)
	cl := newClusterStack(t)
	now := time.Now().UTC()
	lines, _ := mixedStream(rand.New(rand.NewPCG(11, 12)), 0, 3000, now, 3*time.Hour)
	for i := 0; i < len(lines); i += 250 {
		batch := lines[i:min(i+250, len(lines))]
		a, b := one.post(batch), cl.post(batch)
		if a.Accepted != b.Accepted || a.Duplicates != b.Duplicates || a.Rejected != b.Rejected {
			t.Fatalf("batch %d: one server %+v, cluster %+v", i/250, a, b)
		}
	}

	from, to := now.Add(-3*time.Hour-time.Minute).Truncate(time.Minute), now.Truncate(time.Minute).Add(time.Minute)
	rng := "from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339))
	for _, path := range []string{
		"/v1/metrics/US/banner?" + rng,
		"/v1/metrics?group_by=country,ad_format&" + rng,
		"/v1/metrics?group_by=minute,ad_id&" + rng,
		"/v1/metrics?group_by=hour,device&country=KR&" + rng,
		"/v1/ads/top?n=10&metric=clicks&" + rng,
		"/v1/ads/top?n=25&metric=spend_micros&ad_format=video&" + rng,
		"/v1/ads/ad07/series?granularity=1m&" + rng,
		"/v1/ads/ad11/series?granularity=1h&" + rng,
	} {
		a, b := uncached(t, one.url+path), uncached(t, cl.url+path)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: one server and the cluster differ\none:     %.300v\ncluster: %.300v", path, a, b)
		}
	}
	// The cluster reads its rollups (noted complete on every shard when the
	// schema was made): whole hours of the top-N from ad_totals_hour.
	if plan := fmt.Sprint(uncached(t, cl.url+"/v1/ads/top?n=10&metric=clicks&"+rng)["plan"]); !strings.Contains(plan, "ad_totals_hour") {
		t.Errorf("the cluster's top-N plan reads no hourly rollup: %s", plan)
	}

	// Each event on its shard (both replicas), none on the other shard.
	db := cl.cluster
	total := 0
	for s := 1; s <= 2; s++ {
		var counts []string
		for _, n := range db.Cluster.Shard(s) {
			node := db.Node(n)
			var got string
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				got = testenv.QueryString(t, node, "SELECT count(), countIf(cityHash64(event_id) % 2 != "+fmt.Sprint(s-1)+") FROM events_local")
				if len(counts) == 0 || got == counts[0] || time.Now().After(deadline) {
					break
				}
			}
			counts = append(counts, got)
		}
		if counts[0] != counts[1] || !strings.HasSuffix(counts[0], "\t0") {
			t.Errorf("shard %d: its replicas hold %q (rows, rows of another shard)", s, counts)
		}
		var n int
		fmt.Sscan(counts[0], &n)
		total += n
	}
	if all := testenv.QueryString(t, db.Node(db.Cluster.Nodes[0]), "SELECT count() FROM events"); fmt.Sprint(total) != all {
		t.Errorf("shards hold %d rows, the Distributed table %s", total, all)
	}
}

// mixedStream is n events over the span before now, numbered from first
// (their ids unique across calls with distinct numbers): about 1 in 12 a
// resend of an earlier one of the call, 1 in 100 broken; valid are the
// distinct valid ones.
func mixedStream(r *rand.Rand, first, n int, now time.Time, span time.Duration) (lines [][]byte, valid []event) {
	for i := first; i < first+n; i++ {
		e := randomEvent(r, i, now, span)
		switch {
		case i%97 == 0:
			e.bad = "country"
		case i%13 == 0 && len(valid) > 0:
			e = valid[r.IntN(len(valid))] // a resend
		default:
			valid = append(valid, e)
		}
		lines = append(lines, e.json())
	}
	return lines, valid
}

// uncached GETs a route past the cache and decodes it, without the fields
// that say how it was answered.
func uncached(t *testing.T, u string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", u, resp.StatusCode, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "cached")
	return m
}
