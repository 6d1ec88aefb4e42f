// Package testenv decides whether a test that needs a kernel capability (root, FUSE,
// io_uring, loop devices) may skip when the capability is missing.
//
// A skip is allowed on a developer's laptop. CI exports POLYTROPON_REQUIRE_PRIVILEGED=1,
// and then a missing capability fails the test instead: a green CI run means those
// tests really ran. Every privileged test goes through this package rather than
// calling t.Skip itself.
package testenv

import (
	"errors"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireEnv is the variable CI sets to turn skips into failures.
const RequireEnv = "POLYTROPON_REQUIRE_PRIVILEGED"

// Required reports whether privileged capabilities are mandatory in this run.
func Required() bool {
	v := os.Getenv(RequireEnv)
	return v != "" && v != "0"
}

// SkipOrFail skips the test with reason, or fails it when Required.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s, and %s=1 forbids skipping", reason, RequireEnv)
		return
	}
	t.Skip(reason)
}

// Root requires an effective uid of 0.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "test needs root")
	}
}

// FUSE requires /dev/fuse to be openable for reading and writing.
func FUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		SkipOrFail(t, "test needs FUSE: "+err.Error())
		return
	}
	f.Close()
}

var (
	uringOnce sync.Once
	uringErr  error
)

// IOUring requires that io_uring_setup works for this process (it can be disabled by
// sysctl kernel.io_uring_disabled or by a seccomp filter).
func IOUring(t testing.TB) {
	t.Helper()
	uringOnce.Do(func() { uringErr = probeIOUring() })
	if uringErr != nil {
		SkipOrFail(t, "test needs io_uring: "+uringErr.Error())
	}
}

// ioUringParams mirrors struct io_uring_params (120 bytes); only its size matters to
// the probe, which asks for the smallest ring and closes it at once.
type ioUringParams [120]byte

func probeIOUring() error {
	var p ioUringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptrOf(&p), 0)
	if errno != 0 {
		return errno
	}
	return unix.Close(int(fd))
}

// LoopDevices requires root and /dev/loop-control.
func LoopDevices(t testing.TB) {
	t.Helper()
	Root(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			SkipOrFail(t, "test needs loop devices: /dev/loop-control is missing")
			return
		}
		SkipOrFail(t, "test needs loop devices: "+err.Error())
	}
}

// cpusetLock serialises, across test processes, the tests that make cpusets
// exclusive with those that create cpusets at all: an exclusive cpuset makes
// the kernel refuse its CPUs to every cpuset beside it.
const cpusetLock = "/run/polytropon-test-cpusets.lock"

// Cpusets takes the cpuset lock for the rest of the test: shared for a test
// that creates cpusets, exclusive for one that makes them exclusive.
func Cpusets(t testing.TB, exclusive bool) {
	t.Helper()
	f, err := os.OpenFile(cpusetLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("cpuset test lock: %v", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		t.Fatalf("cpuset test lock: %v", err)
	}
	t.Cleanup(func() { f.Close() })
}
