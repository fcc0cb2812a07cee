package clickagg

import "testing"

func TestValidCountry(t *testing.T) {
	for _, c := range []string{"US", "KR", "JP", "DE", "BR", "IN", "GB", "XK", "ZZ"} {
		if !ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = false, want true", c)
		}
	}
	for _, c := range []string{"", "U", "USA", "us", "Us", "UK", "EU", "QQ", "1A", "ÜS"} {
		if ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = true, want false", c)
		}
	}
	n := 0
	for a := range countries {
		for b := range countries[a] {
			if countries[a][b] {
				n++
			}
		}
	}
	if n != 251 { // 249 ISO codes, XK and ZZ
		t.Errorf("%d countries known, want 251", n)
	}
}
