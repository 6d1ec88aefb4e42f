package shm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// NewEventfd creates a non-blocking, close-on-exec eventfd with a zero counter.
func NewEventfd() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("shm: eventfd: %w", err)
	}
	return fd, nil
}

// IsEventfd reports whether fd is an eventfd (an anonymous inode the kernel names
// "[eventfd]"), so that a peer cannot pass a file, a pipe or a socket where an
// eventfd is expected.
func IsEventfd(fd int) bool {
	var buf [32]byte
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf[:])
	return err == nil && string(buf[:n]) == "anon_inode:[eventfd]"
}
