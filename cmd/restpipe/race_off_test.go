//go:build !race

package main

func largeSize() int64 { return 1 << 30 }
