package peercred

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerGroups reads SO_PEERGROUPS: the supplementary groups the peer had at
// connect(2). The kernel answers ERANGE with the needed size when the buffer is
// too small; NGROUPS_MAX (65536) bounds the retry.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == 0:
			return buf[: n/4 : n/4], nil
		case e == unix.ERANGE && int(n/4) > len(buf) && n/4 <= 65536:
			buf = make([]uint32, n/4)
		default:
			return nil, fmt.Errorf("peercred: SO_PEERGROUPS: %w", e)
		}
	}
}

// peerPidfd reads SO_PEERPIDFD (Linux 6.5): a pidfd of the peer process, taken
// at connect(2), so it cannot name a process that reused the peer's pid.
func peerPidfd(fd int) (int, error) {
	var pidfd int32
	n := uint32(unsafe.Sizeof(pidfd))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD,
		uintptr(unsafe.Pointer(&pidfd)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return -1, e
	}
	return int(pidfd), nil
}
