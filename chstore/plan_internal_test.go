package chstore

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
)

// TestPlanCovers: every plan covers its range once, in order, each piece on
// whole grains of its table, a rollup only where it is complete.
func TestPlanCovers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	complete := map[string]time.Time{"ad_totals_minute": base.Add(30*time.Hour + 7*time.Minute), "ad_totals_hour": base.Add(26 * time.Hour), "dim_stats_hour": base, "dim_stats_minute_by_time": base.Add(50 * time.Hour)}
	families := [][]tier{
		levels(needs{}, true),
		levels(needs{dims: hasAd}, true),
		levels(needs{dims: hasAd, byAd: true}, true),
		levels(needs{dims: hasAd | hasCountry}, true),
		levels(needs{group: time.Hour}, true),
	}
	for range 2000 {
		from := base.Add(time.Duration(r.IntN(4*24*60)) * time.Minute)
		rng := clickagg.Range{From: from, To: from.Add(time.Duration(1+r.IntN(3*24*60)) * time.Minute)}
		for _, lv := range families {
			at := rng.From
			for _, p := range cheapest(rng, lv, clickagg.Filter{}, complete) {
				if !p.from.Equal(at) || !p.from.Before(p.to) {
					t.Fatalf("%v: piece %s [%v, %v) does not start where the last ended (%v)", rng, p.table, p.from, p.to, at)
				}
				if !p.from.Truncate(p.grain).Equal(p.from) || !p.to.Truncate(p.grain).Equal(p.to) {
					t.Fatalf("%v: piece %s [%v, %v) not on whole grains", rng, p.table, p.from, p.to)
				}
				if cf, ok := complete[p.table]; p.rollup && (!ok || p.from.Before(cf)) {
					t.Fatalf("%v: rollup %s read from %v, complete from %v", rng, p.table, p.from, cf)
				}
				at = p.to
			}
			if !at.Equal(rng.To) {
				t.Fatalf("%v: plan ends at %v", rng, at)
			}
		}
	}
}
