// Package generator produces realistic ad event traffic for clickagg: a
// deterministic event Source (no I/O) and Load, an HTTP driver that offers
// the events to a collector at a steady rate and reports what it answered.
package generator
