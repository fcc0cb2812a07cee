// Package e2e holds end-to-end tests: the collector, ingestor, dedup set,
// store, cache and API wired as serve wires them, against real ClickHouse
// and Redis from the test harness.
package e2e
