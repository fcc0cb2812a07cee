package generator

import "time"

// stamp formats event times as RFC 3339 in UTC with milliseconds. Formatting
// the date and time of day was most of the cost of an event, and it changes
// only once a second, so the last one is kept.
type stamp struct {
	sec    int64
	prefix []byte // "2006-01-02T15:04:05" of sec
}

func newStamp() stamp { return stamp{sec: -1 << 63, prefix: make([]byte, 0, 32)} }

func (s *stamp) append(dst []byte, t time.Time) []byte {
	t = t.UTC()
	if sec := t.Unix(); sec != s.sec {
		s.sec = sec
		s.prefix = t.AppendFormat(s.prefix[:0], "2006-01-02T15:04:05")
	}
	ms := t.Nanosecond() / int(time.Millisecond)
	dst = append(dst, s.prefix...)
	return append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}
