package generator

import "math/rand/v2"

// ring keeps copies of the last few events so a duplicate can resend one
// byte for byte; the slots are reused to keep AppendNext allocation free.
type ring struct {
	lines [][]byte
	next  int
	full  bool
}

func newRing(n int) ring { return ring{lines: make([][]byte, n)} }

func (r *ring) len() int {
	if r.full {
		return len(r.lines)
	}
	return r.next
}

func (r *ring) add(line []byte) {
	r.lines[r.next] = append(r.lines[r.next][:0], line...)
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
}

func (r *ring) pick(rng *rand.Rand) []byte { return r.lines[rng.IntN(r.len())] }
