package pool

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
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
func EnterAndExec(procsFiles []string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("pool-exec: no command")
	}
	for _, f := range procsFiles {
		if err := os.WriteFile(f, pidString(os.Getpid()), 0); err != nil {
			return fmt.Errorf("pool-exec: enter cgroup: %w", err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("pool-exec: %w", err)
	}
	return fmt.Errorf("pool-exec: exec %s: %w", path, unix.Exec(path, argv, os.Environ()))
}
