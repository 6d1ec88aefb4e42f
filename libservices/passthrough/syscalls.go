package passthrough

import (
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Syscalls counts the system calls of the FSes that count into it, by kind. It
// is for tests that pin what an operation costs: the count is the contract of
// the directory cache (see the package doc), and a test that fails on a
// changed count is the only way to notice that a change made a path resolve
// twice. Every system call an FS makes after New goes through FS.sys, so a
// count is complete; an FS that counts nothing pays one nil check per call.
//
// A test of one FS sets Options.Syscalls; a test of a whole stack built from
// configuration, which cannot carry a pointer, calls CountSyscalls before it
// builds the stack.
type Syscalls struct {
	n [sysKinds]atomic.Int64
}

// sysKind names a system call, as strace does.
type sysKind uint8

const (
	sysOpenat2 sysKind = iota
	sysOpenat
	sysClose
	sysFstat
	sysFstatat
	sysMkdirat
	sysSymlinkat
	sysReadlinkat
	sysUnlinkat
	sysRenameat
	sysLinkat
	sysGetdents
	sysTruncate
	sysFchownat
	sysFchmodat
	sysFchmod
	sysUtimensat
	sysFstatfs
	sysGetxattr
	sysSetxattr
	sysListxattr
	sysRemovexattr
	sysPread
	sysPwrite
	sysFtruncate
	sysFallocate
	sysFsync
	sysFdatasync
	sysKinds
)

var sysNames = [sysKinds]string{
	"openat2", "openat", "close", "fstat", "newfstatat", "mkdirat", "symlinkat", "readlinkat",
	"unlinkat", "renameat", "linkat", "getdents64", "truncate", "fchownat", "fchmodat", "fchmod",
	"utimensat", "fstatfs", "getxattr", "setxattr", "listxattr", "removexattr", "pread64",
	"pwrite64", "ftruncate", "fallocate", "fsync", "fdatasync",
}

// Total returns the number of system calls counted.
func (s *Syscalls) Total() int64 {
	var t int64
	for i := range s.n {
		t += s.n[i].Load()
	}
	return t
}

// Count returns the number of calls of the system call named name (strace's
// name: "openat2", "newfstatat", "close", ...); 0 for a name never counted.
func (s *Syscalls) Count(name string) int64 {
	for i, n := range sysNames {
		if n == name {
			return s.n[i].Load()
		}
	}
	return 0
}

// Reset sets every count to 0.
func (s *Syscalls) Reset() {
	for i := range s.n {
		s.n[i].Store(0)
	}
}

// String lists the nonzero counts, e.g. "newfstatat=1 close=1".
func (s *Syscalls) String() string {
	var b strings.Builder
	for i := range s.n {
		if v := s.n[i].Load(); v != 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(sysNames[i] + "=" + strconv.FormatInt(v, 10))
		}
	}
	return b.String()
}

// newSyscalls is what FSes built by New count into when their Options name no
// Syscalls: set only by tests, through CountSyscalls. It is read once per New,
// never per call.
var newSyscalls atomic.Pointer[Syscalls]

// CountSyscalls makes every FS that New builds from now on, whose Options.Syscalls
// is nil, count its system calls into s, until stop is called; an FS keeps
// counting into s for its life. It is for tests of whole stacks built from
// configuration (libservices/stack), which cannot set Options.Syscalls; such
// tests must not run in parallel with other tests that build passthrough FSes.
func CountSyscalls(s *Syscalls) (stop func()) {
	newSyscalls.Store(s)
	return func() { newSyscalls.CompareAndSwap(s, nil) }
}

// sys counts one system call of kind k.
func (f *FS) sys(k sysKind) {
	if c := f.calls; c != nil {
		c.n[k].Add(1)
	}
}

// The wrappers below are the only way the FS reaches the kernel after New.

func (f *FS) close(fd int) error {
	f.sys(sysClose)
	return unix.Close(fd)
}

func (f *FS) fstat(fd int, st *unix.Stat_t) error {
	f.sys(sysFstat)
	return unix.Fstat(fd, st)
}

func (f *FS) fstatat(dfd int, name string, st *unix.Stat_t, flags int) error {
	f.sys(sysFstatat)
	return unix.Fstatat(dfd, name, st, flags)
}
