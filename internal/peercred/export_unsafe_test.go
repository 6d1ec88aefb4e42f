package peercred

import "unsafe"

func uintptrOfGroups(g []uint32) uintptr { return uintptr(unsafe.Pointer(&g[0])) }
