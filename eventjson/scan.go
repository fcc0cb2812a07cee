package eventjson

import (
	"bytes"
	"encoding/binary"
	"math/bits"

	"github.com/valyala/fastjson"

	"github.com/clickagg/clickagg"
)

// scan is the fast path of decode, for the shape senders use: one flat
// object whose keys and string values hold no backslash and whose other
// values are unsigned integers or null. It reads data once, without
// fastjson's copy of the text and its tree of values, and hands each field
// to visit as decodeValue would, in the same order, so an event decodes the
// same either way; only its strings alias data, not the parser's copy.
//
// Anything else (escapes, nested values, true or false, fractions, signs,
// exponents, an empty object, text that is not JSON) makes it give up with
// ok false and ev unchanged: fastjson then decides, which keeps its answers
// for unusual input, invalid JSON above all, without repeating them here.
func (d *Decoder) scan(data []byte, ev *clickagg.Event) (fe *clickagg.FieldError, ok bool) {
	// A backslash starts an escape in a string and is not JSON outside
	// one; one search of the line costs less than one in every string.
	if bytes.IndexByte(data, '\\') >= 0 {
		return nil, false
	}
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' {
		return nil, false
	}
	// ev is written only once data is known to have the shape
	e := clickagg.Event{Country: [2]byte{clickagg.UnknownCountry[0], clickagg.UnknownCountry[1]}}
	d.seen, d.field = 0, nil
	for {
		// data[i] is '{' or ','
		i = skipSpace(data, i+1)
		if i == len(data) || data[i] != '"' {
			return nil, false
		}
		n, _ := stringEnd(data, i+1)
		if n < 0 {
			return nil, false
		}
		key := data[i+1 : n]
		i = skipSpace(data, n+1)
		if i == len(data) || data[i] != ':' {
			return nil, false
		}
		i = skipSpace(data, i+1)
		if i == len(data) {
			return nil, false
		}
		var (
			t fastjson.Type
			b []byte
		)
		switch c := data[i]; {
		case c == '"':
			n, ascii := stringEnd(data, i+1)
			if n < 0 {
				return nil, false
			}
			t, b = fastjson.TypeString, data[i+1:n]
			d.utf8 = ascii // else str checks b itself
			i = n + 1
		case '0' <= c && c <= '9':
			j := i + 1
			for j < len(data) && '0' <= data[j] && data[j] <= '9' {
				j++
			}
			if j < len(data) && (data[j] == '.' || data[j] == 'e' || data[j] == 'E' || data[j] == '+' || data[j] == '-') {
				return nil, false // fastjson reads these as part of the number
			}
			t, b = fastjson.TypeNumber, data[i:j]
			i = j
		case bytes.HasPrefix(data[i:], []byte("null")):
			t = fastjson.TypeNull
			i += len("null")
		default:
			return nil, false
		}
		// As in decodeValue: nulls are absent and the first failure stands,
		// but the rest must still be read to know the text is JSON.
		if t != fastjson.TypeNull && d.field == nil {
			d.visit(key, t, b, &e)
		}
		i = skipSpace(data, i)
		if i == len(data) {
			return nil, false
		}
		if data[i] == '}' {
			break
		}
		if data[i] != ',' {
			return nil, false
		}
	}
	if skipSpace(data, i+1) != len(data) {
		return nil, false
	}
	*ev = e
	return d.result(), true
}

// skipSpace returns the index of the first byte of data from i on that is
// not JSON white space, or len(data).
func skipSpace(data []byte, i int) int {
	// most calls are at a byte above ' ', which ends them in one test
	for i < len(data) && data[i] <= ' ' && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index of the quote that ends the string starting at
// data[i] (there is no backslash in data), or -1, and whether the string is
// ASCII, so valid UTF-8 with no check of its own. It reads eight bytes at a
// time: strings are short, and this beats a call to bytes.IndexByte.
func stringEnd(data []byte, i int) (end int, ascii bool) {
	var high uint64 // the bytes read, or-ed: bytes past the end only make a false "not ASCII"
	for ; i+8 <= len(data); i += 8 {
		w := binary.LittleEndian.Uint64(data[i:])
		high |= w
		if m := quotes(w); m != 0 {
			return i + bits.TrailingZeros64(m)/8, high&highs == 0
		}
	}
	for ; i < len(data); i++ {
		if data[i] == '"' {
			return i, high&highs == 0
		}
		high |= uint64(data[i])
	}
	return -1, false
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// quotes flags the bytes of w that are a quote, the lowest one exactly: the
// bytes of x are zero where w's are quotes, and (x-ones)&^x&highs flags x's
// zero bytes, plus, from the borrow, maybe some bytes above the first.
func quotes(w uint64) uint64 {
	x := w ^ '"'*ones
	return (x - ones) &^ x & highs
}
