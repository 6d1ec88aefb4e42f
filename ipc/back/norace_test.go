//go:build !race

package back

const raceEnabled = false
