//go:build unix && !linux

package pluginsdk

import "golang.org/x/sys/unix"

// dupOnto makes descriptor newfd a copy of oldfd. Not every Unix has dup3
// (macOS does not), but all of them except Linux on some architectures
// have dup2.
func dupOnto(oldfd, newfd int) error { return unix.Dup2(oldfd, newfd) }
