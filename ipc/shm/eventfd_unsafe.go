package shm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// eventOne is what EventfdWrite adds: a package variable, so that taking its
// address for the system call allocates nothing.
var eventOne uint64 = 1

// EventfdWrite adds one to the eventfd's counter, waking whoever polls it. It is
// one write(2) and allocates nothing. On a non-blocking eventfd whose counter is at
// its maximum it returns EAGAIN (the fd is readable then anyway).
func EventfdWrite(fd int) error {
	_, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&eventOne)), 8)
	if e != 0 {
		return e
	}
	return nil
}

// EventfdRead reads and resets the counter of a non-blocking eventfd: it returns
// the count, or EAGAIN when it was zero.
func EventfdRead(fd int) (uint64, error) {
	var v uint64
	_, _, e := unix.Syscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&v)), 8)
	if e != 0 {
		return 0, e
	}
	return v, nil
}
