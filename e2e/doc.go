// Package e2e holds end-to-end tests against real ClickHouse and Redis from
// the test harness: in process through server.Server, the type `clickagg
// serve` runs, and the fault tests through the clickagg binary itself.
package e2e
