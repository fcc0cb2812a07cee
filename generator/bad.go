package generator

import (
	"bytes"
	"strconv"
	"time"
)

// Malformed events are what real senders get wrong. Each kind is refused by
// the collector, into dead_letters, with its own reason and field:
//
//	badEnum     invalid_field, type or ad_format: a value outside the enum
//	badMissing  invalid_field, ad_id: required
//	badTS       invalid_field, ts: not RFC 3339 text nor unix milliseconds
//	badLate     too_late, ts: older than the collector's allowed lateness
//
// A malformed line is a copy of a recent event with a new event_id and one
// thing wrong, so it names real ads and users as a buggy sender would.
const (
	badEnum = iota
	badMissing
	badTS
	badLate
	badKinds
)

// Values outside the enums: a viewability or install event the schema does
// not have, a capitalised name; formats it does not know, and "unknown",
// the collector's own placeholder that senders must omit instead.
var (
	badTypes   = [...]string{"view", "install", "Click"}
	badFormats = [...]string{"audio", "playable", "unknown"}
)

// How far in the past a too-late event lies: beyond the collector's default
// AllowedLateness of 7 days, as a device that was offline for weeks flushes
// its queue. A collector allowing more lateness takes some of them as late
// events.
const (
	minTooLate = 8 * 24 * time.Hour
	maxTooLate = 30 * 24 * time.Hour
)

// appendBad appends a malformed event at clock time now: a copy of a recent
// event with a fresh event_id (the original's would make the dead letter
// look like a refused resend) and one thing wrong. It draws only from
// s.badRng, and the recent events must not be empty.
func (s *Source) appendBad(dst []byte, now time.Time) []byte {
	rng := s.badRng
	orig := s.recent.pick(rng)
	_, idEnd := valueAt(orig, `"event_id":`)
	dst = append(dst, `{"event_id":"`...)
	dst = append(dst, s.idPrefix...)
	dst = appendHex16(dst, rng.Uint64())
	dst = append(dst, "-r"...) // 'r' is no hex digit: never an original's id
	dst = strconv.AppendUint(dst, s.bads, 16)
	s.bads++
	dst = append(dst, '"')
	rest := orig[idEnd:]
	switch rng.IntN(badKinds) {
	case badEnum:
		key, values := `"type":`, badTypes[:]
		if rng.IntN(2) == 1 {
			key, values = `"ad_format":`, badFormats[:]
		}
		from, to := valueAt(rest, key)
		dst = append(dst, rest[:from]...)
		dst = append(dst, '"')
		dst = append(dst, values[rng.IntN(len(values))]...)
		dst = append(dst, '"')
		return append(dst, rest[to:]...)
	case badMissing:
		const key = `,"ad_id":`
		from, to := valueAt(rest, key)
		dst = append(dst, rest[:from-len(key)]...)
		return append(dst, rest[to:]...)
	case badTS:
		from, to := valueAt(rest, `"ts":`)
		dst = append(dst, rest[:from]...)
		switch rng.IntN(3) {
		case 0: // SQL DATETIME text
			dst = append(dst, '"')
			dst = now.AppendFormat(dst, "2006-01-02 15:04:05")
			dst = append(dst, '"')
		case 1: // local time without an offset
			dst = append(dst, '"')
			dst = now.AppendFormat(dst, "2006-01-02T15:04:05.000")
			dst = append(dst, '"')
		default: // unix seconds where milliseconds are expected: 1970
			dst = strconv.AppendInt(dst, now.Unix(), 10)
		}
		return append(dst, rest[to:]...)
	default: // badLate
		from, to := valueAt(rest, `"ts":`)
		ago := minTooLate + time.Duration(rng.Int64N(int64(maxTooLate-minTooLate)))
		dst = append(dst, rest[:from]...)
		dst = append(dst, '"')
		dst = s.stamp.append(dst, now.Add(-ago))
		dst = append(dst, '"')
		return append(dst, rest[to:]...)
	}
}

// valueAt returns where the value after key lies in a generated event: a
// string with its quotes, or a number. The key must be there.
func valueAt(line []byte, key string) (from, to int) {
	from = bytes.Index(line, []byte(key)) + len(key)
	if line[from] == '"' {
		return from, from + 2 + bytes.IndexByte(line[from+1:], '"')
	}
	end := bytes.IndexAny(line[from:], ",}")
	return from, from + end
}
