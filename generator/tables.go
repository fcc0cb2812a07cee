package generator

import "github.com/clickagg/clickagg"

// formatSpec is how one ad format behaves. Prices are in micros of what the
// advertiser pays per event: an impression costs CPM/1000, so a $1.50 CPM
// banner impression is 1500 micros. CPCs are set so that CPC × CTR stays
// near the impression price, as it does when both models compete: hence the
// cheap clicks of rewarded video, whose CTR is high.
type formatSpec struct {
	weight int     // share of ads using the format
	ctr    float64 // clicks per impression
	cvr    float64 // conversions per click
	imp    float64 // micros per impression (CPM in dollars × 1000)
	cpc    float64 // micros per click
	cpa    float64 // micros per conversion
}

// formats is indexed by clickagg.AdFormat; the unknown format has weight 0
// so no ad gets it.
var formats = [...]formatSpec{
	clickagg.FormatBanner:        {weight: 35, ctr: 0.008, cvr: 0.03, imp: 1_500, cpc: 250_000, cpa: 2_000_000},
	clickagg.FormatInterstitial:  {weight: 15, ctr: 0.03, cvr: 0.04, imp: 8_000, cpc: 350_000, cpa: 4_000_000},
	clickagg.FormatNative:        {weight: 20, ctr: 0.015, cvr: 0.05, imp: 4_000, cpc: 400_000, cpa: 3_000_000},
	clickagg.FormatRewardedVideo: {weight: 15, ctr: 0.08, cvr: 0.10, imp: 15_000, cpc: 200_000, cpa: 6_000_000},
	clickagg.FormatVideo:         {weight: 15, ctr: 0.02, cvr: 0.06, imp: 12_000, cpc: 600_000, cpa: 5_000_000},
}

// countrySpec is one country's share of users and how its prices compare
// with the US.
type countrySpec struct {
	code   string
	weight int
	price  float64
}

// countries lists the big markets first, then a tail; weights are relative.
var countries = [...]countrySpec{
	{"US", 300, 1.00}, {"KR", 110, 0.80}, {"JP", 100, 0.90}, {"IN", 80, 0.15},
	{"DE", 60, 0.75}, {"GB", 60, 0.80}, {"BR", 50, 0.25}, {"FR", 40, 0.70},
	{"CA", 40, 0.85}, {"AU", 30, 0.85},
	{"MX", 15, 0.30}, {"ID", 15, 0.15}, {"TW", 12, 0.50}, {"ES", 10, 0.55},
	{"IT", 10, 0.55}, {"VN", 10, 0.15}, {"TH", 8, 0.20}, {"PH", 8, 0.15},
	{"TR", 8, 0.20}, {"NL", 8, 0.70}, {"SE", 6, 0.70}, {"PL", 6, 0.40},
	{"SG", 6, 0.80}, {"SA", 5, 0.50}, {"AE", 5, 0.60}, {"NG", 4, 0.10},
	{"EG", 4, 0.10}, {"ZA", 4, 0.30}, {"AR", 4, 0.25}, {"CL", 3, 0.30},
}

// devices is indexed by clickagg.Device; values are per-mille shares.
var devices = [...]int{
	clickagg.DeviceAndroid: 450,
	clickagg.DeviceIOS:     350,
	clickagg.DeviceWeb:     120,
	clickagg.DeviceCTV:     50,
	clickagg.DeviceOther:   30,
}

// Traffic shape constants.
const (
	zipfS          = 1.1 // ad popularity exponent: a few hot ads, a long tail
	zipfV          = 2
	adsPerCampaign = 20
	usersPerAd     = 100
	ipv6PerMille   = 80
	minLate        = 60_000     // ms
	maxLate        = 10_800_000 // ms, 3 h
	recentLines    = 512        // how far back a duplicate may reach
)

// pick returns the index of the entry whose weight band holds r, which must
// lie in [0, total(table, weight)).
func pick[T any](table []T, weight func(T) int, r int) int {
	for i, e := range table {
		if r < weight(e) {
			return i
		}
		r -= weight(e)
	}
	return len(table) - 1
}

func total[T any](table []T, weight func(T) int) int {
	n := 0
	for _, e := range table {
		n += weight(e)
	}
	return n
}

func formatWeight(f formatSpec) int   { return f.weight }
func countryWeight(c countrySpec) int { return c.weight }
func deviceWeight(w int) int          { return w }
