//go:build !amd64 || purego

package memcopy

// platformKernels is empty without assembly: the built-in copy, which the Go
// runtime already implements in assembly for each architecture, is the pure-Go
// fallback and the only kernel.
func platformKernels() []*Kernel { return nil }
