package pool

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/privdrop"
)

// EnterAndExec moves the calling process into the cgroups whose cgroup.procs
// files are given, then replaces it with argv.
//
// This is how serve starts a pool's service (through the hidden `polytropon
// pool-exec` command): writing our own pid to cgroup.procs moves every thread of
// the process at once, and only then does the service's program start, so no
// thread of it ever runs outside the pool. Starting the service first and moving
// it afterwards would let its first threads (and their allocations) escape the
// limits; CLONE_INTO_CGROUP would do the same in one step but exists for cgroup v2
// only.
//
// With netns (a bind-mounted network namespace), the service runs in it: the
// namespace is joined by this thread, locked to it, and execve keeps the
// calling thread's namespaces.
func EnterAndExec(procsFiles []string, netns string, argv []string) error {
	return EnterAndExecAs(procsFiles, netns, nil, argv)
}

// EnterAndExecAs is EnterAndExec that, when user is not nil, drops to that
// user for good after joining the cgroups and the namespace and before the
// exec (privdrop.Exec: no capabilities, no_new_privs, not dumpable once the
// program calls privdrop.Finish). Descriptors the caller inherited without
// close-on-exec reach the program: serve hands a pool's service its sockets
// and FUSE connections that way.
func EnterAndExecAs(procsFiles []string, netns string, user *privdrop.Identity, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("pool-exec: no command")
	}
	if netns != "" {
		runtime.LockOSThread()
		if err := joinNetns(netns); err != nil {
			return fmt.Errorf("pool-exec: %w", err)
		}
	}
	for _, f := range procsFiles {
		if err := os.WriteFile(f, pidString(os.Getpid()), 0); err != nil {
			return fmt.Errorf("pool-exec: enter cgroup: %w", err)
		}
	}
	if user != nil {
		return fmt.Errorf("pool-exec: %w", privdrop.Exec(*user, argv, os.Environ()))
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("pool-exec: %w", err)
	}
	return fmt.Errorf("pool-exec: exec %s: %w", path, unix.Exec(path, argv, os.Environ()))
}

// joinNetns moves the calling thread (which the caller has locked) into the
// network namespace bind-mounted at path.
func joinNetns(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join network namespace %s: %w", path, err)
	}
	return nil
}
