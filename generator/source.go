package generator

import (
	"cmp"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/clickagg/clickagg"
)

// Options configures a Source. The zero value works.
type Options struct {
	// Ads is the number of distinct ads; default 1000.
	Ads int
	// Seed selects the stream: the same seed gives the same bytes; default 1.
	Seed uint64
	// LateShare is the share of events whose ts lies 1 min to 3 h in the
	// past; default 0.01, negative for none.
	LateShare float64
	// DuplicateShare is the share of events that resend a recent event byte
	// for byte; default 0.001, negative for none.
	DuplicateShare float64
	// BadShare is the share of lines that are malformed events the
	// collector refuses into dead_letters: a value outside an enum, no
	// ad_id, an unparsable ts, a ts older than the allowed lateness (bad.go).
	// Default 0.003, negative for none. Malformed lines come from their own
	// random stream and take no tick of the clock: the other lines are, byte
	// for byte, the stream of the same Options with BadShare < 0.
	BadShare float64
	// Start, when set, starts a deterministic event clock that advances
	// 1/Rate s per event, so ts does not depend on when events are read.
	// Zero means the wall clock from New on, as Now = time.Now does.
	Start time.Time
	// Rate is how many events make one second on the deterministic clock;
	// default 1000.
	Rate int
	// Now, when set, is the event clock: ts = Now() minus any lateness.
	Now func() time.Time
	// IDPrefix starts every event_id. Live runs set one per run, so that a
	// second run with the same seed sends new events rather than resends.
	IDPrefix string
}

// Source produces an endless stream of ad events. It is not safe for
// concurrent use.
type Source struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	ads   []ad // by popularity rank, hottest first
	users userPool

	late, dup, bad float64
	badRng         *rand.Rand // draws of malformed lines only
	start          time.Time
	rate           uint64
	now            func() time.Time

	lines    uint64 // lines produced so far, malformed ones aside; drives the clock
	events   uint64 // original events produced; part of event_id
	bads     uint64 // malformed lines produced; part of their event_id
	idPrefix string
	recent   ring
	stamp    stamp
}

// ad is what stays fixed for one ad across its events.
type ad struct {
	fields []byte // `,"ad_id":"…","campaign_id":"…"`
	format int    // index into formats
	price  float64
}

// New returns a Source for o.
func New(o Options) *Source {
	o = o.WithDefaults()
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	return &Source{
		rng:      rng,
		zipf:     rand.NewZipf(rng, zipfS, zipfV, uint64(o.Ads-1)),
		ads:      makeAds(rng, o.Ads),
		users:    newUserPool(o.Seed, uint64(o.Ads)*usersPerAd),
		late:     max(o.LateShare, 0),
		dup:      max(o.DuplicateShare, 0),
		bad:      max(o.BadShare, 0),
		badRng:   rand.New(rand.NewPCG(o.Seed^0x5851f42d4c957f2d, o.Seed+0x14057b7ef767814f)),
		start:    o.Start.UTC(),
		rate:     uint64(o.Rate),
		now:      o.Now,
		recent:   newRing(recentLines),
		stamp:    newStamp(),
		idPrefix: o.IDPrefix,
	}
}

// Defaults of Options.
const (
	DefaultAds            = 1000
	DefaultLateShare      = 0.01
	DefaultDuplicateShare = 0.001
	// DefaultBadShare: 3 lines in 1000. At the default 5000 ev/s that is
	// about 15 refused events a second, a few of each kind, so the rejection
	// counters and dead_letters visibly move in a demo, while the accepted
	// traffic and its aggregates change by 0.3 %; real feeds refuse 0.1-1 %.
	DefaultBadShare  = 0.003
	DefaultClockRate = 1000
)

// WithDefaults returns o with its zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	o.Ads = clickagg.PositiveOr(o.Ads, DefaultAds)
	o.Seed = cmp.Or(o.Seed, 1)
	o.LateShare = cmp.Or(o.LateShare, DefaultLateShare)
	o.DuplicateShare = cmp.Or(o.DuplicateShare, DefaultDuplicateShare)
	o.BadShare = cmp.Or(o.BadShare, DefaultBadShare)
	if o.Start.IsZero() && o.Now == nil {
		o.Now = time.Now
	}
	o.Rate = clickagg.PositiveOr(o.Rate, DefaultClockRate)
	return o
}

// Validate checks complete options: some ads, shares of at most 1
// (negative: none), a positive clock rate.
func (o Options) Validate() error {
	return clickagg.FirstError(
		clickagg.Between("Ads", o.Ads, 1, 100_000_000),
		clickagg.Positive("Rate", o.Rate),
		clickagg.AtMost("LateShare", o.LateShare, 1),
		clickagg.AtMost("DuplicateShare", o.DuplicateShare, 1),
		clickagg.AtMost("BadShare", o.BadShare, 1),
	)
}

// makeAds gives every ad a campaign and a format, then shuffles them so the
// hottest ad is not always ad-000000.
func makeAds(rng *rand.Rand, n int) []ad {
	campaigns := max(n/adsPerCampaign, 1)
	formatTotal := total(formats[:], formatWeight)
	ads := make([]ad, n)
	for i := range ads {
		c := i // every campaign gets at least one ad
		if i >= campaigns {
			c = rng.IntN(campaigns)
		}
		b := append([]byte(nil), `,"ad_id":"ad-`...)
		b = appendPadded(b, uint64(i), 6)
		b = append(b, `","campaign_id":"cmp-`...)
		b = appendPadded(b, uint64(c), 4)
		b = append(b, '"')
		ads[i] = ad{
			fields: b,
			format: pick(formats[:], formatWeight, rng.IntN(formatTotal)),
			price:  0.7 + 0.6*rng.Float64(),
		}
	}
	rng.Shuffle(n, func(i, j int) { ads[i], ads[j] = ads[j], ads[i] })
	return ads
}

// appendPadded appends v in decimal with leading zeros to at least width digits.
func appendPadded(b []byte, v uint64, width int) []byte {
	for d, p := 1, uint64(10); d < width; d, p = d+1, p*10 {
		if v < p {
			b = append(b, '0')
		}
	}
	return strconv.AppendUint(b, v, 10)
}

// clock returns the event time of line n.
func (s *Source) clock(n uint64) time.Time {
	if s.now != nil {
		return s.now().UTC()
	}
	sec, rem := n/s.rate, n%s.rate
	return s.start.Add(time.Duration(sec)*time.Second + time.Duration(rem)*time.Second/time.Duration(s.rate))
}

// AppendNext appends the next event as one JSON object, without a newline.
// It does not allocate once the buffers of recent events are warm.
func (s *Source) AppendNext(dst []byte) []byte {
	// A malformed line draws from its own random stream and leaves the main
	// one, the clock and the recent events as they were.
	if s.bad > 0 && s.recent.len() > 0 && s.badRng.Float64() < s.bad {
		return s.appendBad(dst, s.clock(s.lines))
	}
	n := s.lines
	s.lines++
	if s.dup > 0 && s.recent.len() > 0 && s.rng.Float64() < s.dup {
		return append(dst, s.recent.pick(s.rng)...)
	}
	start := len(dst)
	dst = s.appendEvent(dst, s.clock(n))
	s.recent.add(dst[start:])
	return dst
}
