//go:build race

package back

// raceEnabled: the race detector allocates on its own; allocation counts are
// checked without it.
const raceEnabled = true
