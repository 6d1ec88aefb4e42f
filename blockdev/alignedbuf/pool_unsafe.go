package alignedbuf

import "unsafe"

// index finds which buffer b is by its address; b must start exactly at a buffer.
func (p *Pool) index(b []byte) (int, bool) {
	if cap(b) == 0 || p.region == nil {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(p.region)))
	a := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if a < base || a >= base+uintptr(len(p.region)) || (a-base)%uintptr(p.bufSize) != 0 {
		return 0, false
	}
	return int((a - base) / uintptr(p.bufSize)), true
}
