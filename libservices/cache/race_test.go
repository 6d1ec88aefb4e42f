//go:build race

package cache

// raceEnabled: under the race detector sync.Pool drops a quarter of what it is
// given (to shake out races), so recycled pages are allocated again.
const raceEnabled = true
