package eventjson

import "unsafe"

// bytesToString aliases b; the Decoder documents that decoded strings live
// only until its next call, which is what makes decoding allocation-free.
func bytesToString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
