package pluginsdk

import "golang.org/x/sys/unix"

// dupOnto makes descriptor newfd a copy of oldfd. Linux on some
// architectures (arm64, riscv64) has dup3 but no dup2.
func dupOnto(oldfd, newfd int) error { return unix.Dup3(oldfd, newfd, 0) }
