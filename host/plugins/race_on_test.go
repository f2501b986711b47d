//go:build race

package plugins

// raceEnabled is true when the race detector is on; it slows streaming
// tenfold, so the large-body test streams less then (the task runs it again
// without the detector at full size).
const raceEnabled = true
