//go:build race

package service_test

// raceEnabled: the race detector slows Pebble about tenfold, so the Pebble tests
// write fewer keys under it.
const raceEnabled = true
