package asuser

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// setgroups sets the calling thread's supplementary groups only (the libc and Go
// wrappers set every thread's).
func setgroups(groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0); e != 0 {
		return e
	}
	return nil
}
