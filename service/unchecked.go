//go:build polytropon_unchecked

package service

// A service built with -tags polytropon_unchecked checks no permission at all:
// the baseline build for measuring what the checks cost in `polytropon perf
// paths` (see docs/results/2026-12-07). Never ship such a build.
func init() { accessUnchecked = func(string) bool { return true } }
