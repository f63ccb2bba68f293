//go:build !race

package main

// raceEnabled says the race detector is on: its instrumentation moves some
// values to the heap, so allocation counts are checked only without it.
const raceEnabled = false
