//go:build race

package main

// largeSize is the body of the large-transfer tests: the race detector
// slows streaming tenfold, so the full 1 GiB runs in the task's second,
// detector-free pass.
func largeSize() int64 { return 64 << 20 }
