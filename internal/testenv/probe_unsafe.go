package testenv

import "unsafe"

func uintptrOf(p *ioUringParams) uintptr { return uintptr(unsafe.Pointer(p)) }
