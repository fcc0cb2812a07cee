package clickagg

import (
	"strings"

	"golang.org/x/text/language"
)

// notCountries are codes CLDR knows as regions but ISO 3166-1 does not assign
// to a country: exceptionally reserved (AC, CP, ...) and withdrawn (AN, SU, ...).
const notCountries = "AC CP CQ DG EA EZ IC TA UN AN CS FQ NT PC SU YU"

// countries[a][b] is true when the code of letters 'A'+a, 'A'+b is an
// ISO 3166-1 alpha-2 country. Built once from x/text's CLDR data rather than
// a hand-kept list; XK (Kosovo) and ZZ (unknown) are accepted as CLDR does.
var countries = func() (t [26][26]bool) {
	for a := byte('A'); a <= 'Z'; a++ {
		for b := byte('A'); b <= 'Z'; b++ {
			code := string([]byte{a, b})
			r, err := language.ParseRegion(code)
			if err != nil || strings.Contains(notCountries, code) {
				continue
			}
			if (r.IsCountry() || code == UnknownCountry) && r.Canonicalize().String() == code {
				t[a-'A'][b-'A'] = true
			}
		}
	}
	return t
}()

// ValidCountry reports whether s is an upper-case ISO 3166-1 alpha-2 code.
func ValidCountry(s string) bool {
	if len(s) != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' {
		return false
	}
	return countries[s[0]-'A'][s[1]-'A']
}
