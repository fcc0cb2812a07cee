package generator

import (
	"net/netip"

	"github.com/clickagg/clickagg"
)

// userPool derives each user's attributes from a hash of its number, so a
// user keeps one country, device and address without any table in memory.
type userPool struct {
	seed, n      uint64
	countryTotal int
	deviceTotal  int
}

type user struct {
	id      uint64
	country int // index into countries
	device  clickagg.Device
	ip      netip.Addr
}

func newUserPool(seed, n uint64) userPool {
	return userPool{
		seed:         seed,
		n:            max(n, 1000),
		countryTotal: total(countries[:], countryWeight),
		deviceTotal:  total(devices[:], deviceWeight),
	}
}

func (p *userPool) get(i uint64) user {
	// Multiplying by an odd constant and mixing are both bijections, so
	// distinct users get distinct ids.
	h := mix(p.seed ^ i*0x9e3779b97f4a7c15)
	h2 := mix(h)
	u := user{
		id:      h,
		country: pick(countries[:], countryWeight, int(h%uint64(p.countryTotal))),
		device:  clickagg.Device(pick(devices[:], deviceWeight, int((h>>24)%uint64(p.deviceTotal)))),
	}
	if (h>>44)%1000 < ipv6PerMille {
		u.ip = publicIPv6(h2, mix(h2))
	} else {
		u.ip = publicIPv4(h2)
	}
	return u
}

// mix is the splitmix64 finaliser.
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// publicIPv4 turns h into a unicast address outside the private, loopback
// and link-local ranges, as a collector on the internet would see.
func publicIPv4(h uint64) netip.Addr {
	a, b := byte(1+h%223), byte(h>>8)
	switch {
	case a == 10 || a == 127:
		a++
	case a == 172 && b&0xf0 == 16:
		b += 16
	case a == 192 && b == 168, a == 169 && b == 254:
		b++
	}
	return netip.AddrFrom4([4]byte{a, b, byte(h >> 16), byte(h >> 24)})
}

// publicIPv6 puts the address in 2400::/8 .. 2a00::/8, where the regional
// registries allocate.
func publicIPv6(hi, lo uint64) netip.Addr {
	var b [16]byte
	for i := range 8 {
		b[i] = byte(hi >> (8 * i))
		b[8+i] = byte(lo >> (8 * i))
	}
	b[0] = 0x24 + byte(hi%7)
	return netip.AddrFrom16(b)
}
