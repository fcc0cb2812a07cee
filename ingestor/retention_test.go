package ingestor

import "testing"

func TestRetentionDropsABurstsPeak(t *testing.T) {
	r := retention{floor: 100}
	for range 64 {
		r.observe(1000)
	}
	if !r.keep(2000) {
		t.Fatal("a buffer twice the typical use should be kept")
	}
	if r.keep(50_000) {
		t.Fatal("a burst's buffer 50x the typical use was kept")
	}
	for range 64 {
		r.observe(10)
	}
	if !r.keep(100) {
		t.Fatal("a buffer up to the floor should always be kept")
	}
	if r.keep(2000) {
		t.Fatal("after the load fell, a buffer sized for the old load was kept")
	}
}
