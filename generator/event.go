package generator

import (
	"strconv"
	"time"

	"github.com/clickagg/clickagg"
)

// appendEvent appends a new original event with clock time ts.
func (s *Source) appendEvent(dst []byte, ts time.Time) []byte {
	a := &s.ads[s.zipf.Uint64()]
	f := &formats[a.format]
	u := s.users.get(s.rng.Uint64N(s.users.n))
	typ, base := s.drawType(f)
	if s.late > 0 && s.rng.Float64() < s.late {
		ts = ts.Add(-time.Duration(minLate+s.rng.Int64N(maxLate-minLate+1)) * time.Millisecond)
	}
	price := base * a.price * countries[u.country].price * (0.9 + 0.2*s.rng.Float64())

	dst = append(dst, `{"event_id":"`...)
	dst = append(dst, s.idPrefix...)
	dst = appendHex16(dst, s.rng.Uint64())
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, s.events, 16) // the counter makes ids unique
	s.events++
	dst = append(dst, `","type":"`...)
	dst = append(dst, typ.String()...)
	dst = append(dst, `","ts":"`...)
	dst = s.stamp.append(dst, ts)
	dst = append(dst, '"')
	dst = append(dst, a.fields...)
	dst = append(dst, `,"user_id":"u-`...)
	dst = appendHex16(dst, u.id)
	dst = append(dst, `","ip":"`...)
	dst = u.ip.AppendTo(dst)
	dst = append(dst, `","country":"`...)
	dst = append(dst, countries[u.country].code...)
	dst = append(dst, `","ad_format":"`...)
	dst = append(dst, clickagg.AdFormat(a.format).String()...)
	dst = append(dst, `","device":"`...)
	dst = append(dst, u.device.String()...)
	dst = append(dst, `","price_micros":`...)
	dst = strconv.AppendUint(dst, uint64(price+0.5), 10)
	return append(dst, '}')
}

// drawType picks the event type so that, per format, clicks/impressions is
// the CTR and conversions/clicks the CVR; it returns the base price too.
func (s *Source) drawType(f *formatSpec) (clickagg.EventType, float64) {
	conv := f.ctr * f.cvr
	r := s.rng.Float64() * (1 + f.ctr + conv)
	switch {
	case r < conv:
		return clickagg.Conversion, f.cpa
	case r < conv+f.ctr:
		return clickagg.Click, f.cpc
	default:
		return clickagg.Impression, f.imp
	}
}

func appendHex16(dst []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, digits[v>>shift&0xf])
	}
	return dst
}
