package blockdev

import "unsafe"

func addr(p []byte) uintptr {
	if cap(p) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))
}
