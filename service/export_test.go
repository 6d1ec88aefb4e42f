package service

// SetAccessUnchecked makes the instances called name, in services started
// until restore is called, check no permission at all: the baseline of the
// checks' benchmarks.
func SetAccessUnchecked(name string) (restore func()) {
	accessUnchecked = func(n string) bool { return n == name }
	return func() { accessUnchecked = nil }
}
