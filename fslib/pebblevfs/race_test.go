//go:build race

package pebblevfs_test

// raceEnabled: the race detector slows Pebble down about tenfold, so the store
// tests write fewer keys under it.
const raceEnabled = true
