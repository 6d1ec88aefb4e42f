// Package privdrop takes host privilege away from a process for good: a root
// process that has done what needs root (joined cgroups and namespaces, made
// sockets and FUSE mounts) becomes a user with no capabilities and executes a
// program, which completes the drop (Finish) before it reads anything a
// tenant controls. This is how a pool's filesystem service starts (`polytropon
// pool-exec` calls Exec; `polytropon service --handoff` calls Finish).
//
// # Contract
//
// After Exec and Finish the program runs with uid and gid Identity in all four
// fields (real, effective, saved, filesystem), no supplementary groups, every
// capability set empty (effective, permitted, inheritable, ambient and the
// bounding set, so that nothing it executes can gain one either),
// no_new_privs, and not dumpable (PR_SET_DUMPABLE 0): processes of the same
// uid may signal it but cannot ptrace it, read its memory or take its file
// descriptors (/proc/PID/fd, pidfd_getfd). Finish checks all of that on every
// thread and fails otherwise. Identity never has uid 0 or gid 0.
//
// # Why the real gid stays 0 across the exec
//
// execve(2) makes a process dumpable again when its ids are all equal, and a
// dumpable process whose ids all match a tenant's may be attached with ptrace
// by that tenant: in the milliseconds between the exec and the program's own
// PR_SET_DUMPABLE 0, the tenant could take the descriptors serve handed over
// (the service's listening sockets, its FUSE connections). So Exec executes
// with real gid 0 and effective and saved gid the pool's: the kernel treats
// that exec as a set-id transition, makes the new image non-dumpable from its
// first instruction, and refuses ptrace and /proc/PID/fd to the tenant (whose
// real gid is not 0) whatever fs.suid_dumpable says. Finish then sets the
// real gid too (an unprivileged process may: it is its effective gid) after
// PR_SET_DUMPABLE 0. The real gid grants nothing on files (the kernel checks
// the filesystem gid); the uid is the tenant's everywhere from the exec on.
//
// The price of the set-id exec is the runtime's secure mode (AT_SECURE):
// GOTRACEBACK is forced to none, so Finish sets the traceback level back with
// debug.SetTraceback (panics print their stacks again), and a fatal runtime
// error exits with status 2 after its message but without goroutine stacks.
// A dynamically linked binary's loader also ignores LD_* variables, as for
// any set-id program.
//
// The program is executed through a descriptor opened before the drop
// (/proc/self/fd/N), so the pool's user needs execute permission on the
// binary only, not search permission on the directories on the way to it.
//
// Capability bounding set, no_new_privs and the inheritable set are
// per-thread attributes: Exec sets them on the one thread it locks and
// executes from, and the new program's threads inherit them from it. uids,
// gids and groups are set process-wide by the Go runtime.
package privdrop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity is the user a process drops to.
type Identity struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

func (id Identity) String() string { return fmt.Sprintf("uid %d gid %d", id.UID, id.GID) }

// Validate refuses root's ids: a process "dropped" to uid 0 or gid 0 would
// keep root's rights on files.
func (id Identity) Validate() error {
	if id.UID == 0 {
		return errors.New("privdrop: uid 0 is host root; a dropped process needs a uid of its own")
	}
	if id.GID == 0 {
		return errors.New("privdrop: gid 0 is root's group; a dropped process needs a gid of its own")
	}
	return nil
}

// Exec drops the calling process to id and executes argv[0] (looked up in
// PATH) with argv and env. It returns only on failure, after which the process
// must exit: it may be half dropped, and its thread stays locked.
func Exec(id Identity, argv, env []string) error {
	if err := id.Validate(); err != nil {
		return err
	}
	if len(argv) == 0 {
		return errors.New("privdrop: no command")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("privdrop: dropping to %v needs root (running as uid %d)", id, os.Geteuid())
	}
	// Never unlocked: the per-thread attributes below must be the exec'ing
	// thread's, and a failed drop leaves a thread nobody else may use.
	runtime.LockOSThread()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("privdrop: %w", err)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("privdrop: open %s: %w", path, err)
	}
	if err := drop(id); err != nil {
		return err
	}
	err = syscall.Exec("/proc/self/fd/"+strconv.Itoa(fd), argv, env)
	return fmt.Errorf("privdrop: exec %s as %v: %w", path, id, err)
}

// drop does every step of Exec but the exec itself, on the locked thread.
func drop(id Identity) error {
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("privdrop: setgroups: %w", err)
	}
	// Real gid 0 until Finish: see the package documentation.
	if err := syscall.Setresgid(0, int(id.GID), int(id.GID)); err != nil {
		return fmt.Errorf("privdrop: setresgid: %w", err)
	}
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("privdrop: drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("privdrop: clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("privdrop: capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("privdrop: clear inheritable capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("privdrop: no_new_privs: %w", err)
	}
	// Last: it takes CAP_SETUID, CAP_SETGID and CAP_SETPCAP away. With every
	// uid non-zero the kernel clears the permitted and effective sets.
	if err := syscall.Setresuid(int(id.UID), int(id.UID), int(id.UID)); err != nil {
		return fmt.Errorf("privdrop: setresuid: %w", err)
	}
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("privdrop: capget: %w", err)
	}
	if data[0] != (unix.CapUserData{}) || data[1] != (unix.CapUserData{}) {
		return fmt.Errorf("privdrop: capabilities left after setresuid (keep-caps securebit set?): %+v", data)
	}
	return nil
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("privdrop: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("privdrop: cap_last_cap %q", b)
	}
	return n, nil
}

// Finish completes the drop in the program Exec started, before it reads
// anything a tenant controls: it makes the process non-dumpable, sets its
// real gid to its effective gid, restores the traceback level (traceback, ""
// for Go's default "single"; see the package documentation) and checks the
// result on every thread. It returns the identity the process now has.
func Finish(traceback string) (Identity, error) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return Identity{}, fmt.Errorf("privdrop: PR_SET_DUMPABLE: %w", err)
	}
	egid := syscall.Getegid()
	if err := syscall.Setresgid(egid, egid, egid); err != nil {
		return Identity{}, fmt.Errorf("privdrop: setresgid: %w", err)
	}
	if traceback == "" || traceback == "none" {
		traceback = "single"
	}
	debug.SetTraceback(traceback)
	id := Identity{UID: uint32(os.Geteuid()), GID: uint32(egid)}
	if err := id.Validate(); err != nil {
		return id, fmt.Errorf("%w (was the program started by privdrop.Exec?)", err)
	}
	states, err := Threads()
	if err != nil {
		return id, err
	}
	for _, st := range states {
		if err := st.Dropped(id); err != nil {
			return id, err
		}
	}
	return id, nil
}

// State is one thread's credentials as /proc/PID/task/TID/status shows them.
type State struct {
	TID int
	// UIDs and GIDs are real, effective, saved and filesystem.
	UIDs, GIDs [4]uint32
	Groups     []uint32
	// The capability sets (bit n is capability n).
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             bool
	// Dumpable is the process's PR_GET_DUMPABLE (the same for all threads),
	// filled by Self and Threads only.
	Dumpable bool
}

// Dropped checks that st is a thread dropped to id for good.
func (st *State) Dropped(id Identity) error {
	var bad []string
	for i, n := range []string{"real", "effective", "saved", "filesystem"} {
		if st.UIDs[i] != id.UID {
			bad = append(bad, fmt.Sprintf("%s uid %d", n, st.UIDs[i]))
		}
		if st.GIDs[i] != id.GID {
			bad = append(bad, fmt.Sprintf("%s gid %d", n, st.GIDs[i]))
		}
	}
	if len(st.Groups) > 0 {
		bad = append(bad, fmt.Sprintf("supplementary groups %v", st.Groups))
	}
	for _, c := range []struct {
		n string
		v uint64
	}{{"CapInh", st.CapInh}, {"CapPrm", st.CapPrm}, {"CapEff", st.CapEff}, {"CapBnd", st.CapBnd}, {"CapAmb", st.CapAmb}} {
		if c.v != 0 {
			bad = append(bad, fmt.Sprintf("%s %016x", c.n, c.v))
		}
	}
	if !st.NoNewPrivs {
		bad = append(bad, "no_new_privs not set")
	}
	if st.Dumpable {
		bad = append(bad, "dumpable")
	}
	if len(bad) > 0 {
		return fmt.Errorf("privdrop: thread %d is not dropped to %v: %s", st.TID, id, strings.Join(bad, ", "))
	}
	return nil
}

// Privileged reports whether st holds host root's rights: uid 0 anywhere or
// any effective or permitted capability.
func (st *State) Privileged() bool {
	for _, u := range st.UIDs {
		if u == 0 {
			return true
		}
	}
	return st.CapEff != 0 || st.CapPrm != 0
}

// Describe is one line for logs and status: who the process runs as.
func (st *State) Describe() string {
	switch {
	case st.UIDs[1] == 0:
		return fmt.Sprintf("HOST ROOT (uid 0, capabilities %016x)", st.CapEff)
	case st.Privileged():
		return fmt.Sprintf("uid %d gid %d WITH CAPABILITIES (effective %016x, permitted %016x)", st.UIDs[1], st.GIDs[1], st.CapEff, st.CapPrm)
	case st.CapBnd == 0 && st.NoNewPrivs && !st.Dumpable:
		return fmt.Sprintf("uid %d gid %d, no capabilities, no_new_privs, not dumpable", st.UIDs[1], st.GIDs[1])
	default:
		return fmt.Sprintf("uid %d gid %d, no capabilities", st.UIDs[1], st.GIDs[1])
	}
}

// Self returns the calling thread's state.
func Self() (State, error) {
	st, err := Read("/proc/thread-self/status")
	if err != nil {
		return st, err
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return st, fmt.Errorf("privdrop: PR_GET_DUMPABLE: %w", err)
	}
	st.Dumpable = d != 0
	return st, nil
}

// Threads returns the state of every thread of the calling process.
func Threads() ([]State, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("privdrop: %w", err)
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("privdrop: PR_GET_DUMPABLE: %w", err)
	}
	var out []State
	for _, e := range ents {
		st, err := Read(filepath.Join("/proc/self/task", e.Name(), "status"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return nil, err
		}
		st.Dumpable = d != 0
		out = append(out, st)
	}
	return out, nil
}

// Read parses a /proc status file (/proc/PID/status,
// /proc/PID/task/TID/status). Dumpable is not in it and stays false.
func Read(path string) (State, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return State{}, fmt.Errorf("privdrop: %w", err)
	}
	return parse(data)
}

func parse(data []byte) (State, error) {
	var st State
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "Pid":
			st.TID, err = strconv.Atoi(v)
		case "Uid":
			err = ids(v, &st.UIDs)
		case "Gid":
			err = ids(v, &st.GIDs)
		case "Groups":
			for _, f := range strings.Fields(v) {
				g, perr := strconv.ParseUint(f, 10, 32)
				if perr != nil {
					err = perr
					break
				}
				st.Groups = append(st.Groups, uint32(g))
			}
		case "CapInh":
			st.CapInh, err = strconv.ParseUint(v, 16, 64)
		case "CapPrm":
			st.CapPrm, err = strconv.ParseUint(v, 16, 64)
		case "CapEff":
			st.CapEff, err = strconv.ParseUint(v, 16, 64)
		case "CapBnd":
			st.CapBnd, err = strconv.ParseUint(v, 16, 64)
		case "CapAmb":
			st.CapAmb, err = strconv.ParseUint(v, 16, 64)
		case "NoNewPrivs":
			st.NoNewPrivs = v == "1"
		default:
			continue
		}
		if err != nil {
			return st, fmt.Errorf("privdrop: status line %s: %q: %w", k, v, err)
		}
		seen++
	}
	// Pid, Uid, Gid, Groups, five capability sets, NoNewPrivs.
	if seen < 10 {
		return st, fmt.Errorf("privdrop: a status file with %d of the 10 lines it needs", seen)
	}
	return st, nil
}

func ids(v string, out *[4]uint32) error {
	f := strings.Fields(v)
	if len(f) != 4 {
		return fmt.Errorf("want 4 ids")
	}
	for i, s := range f {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return err
		}
		out[i] = uint32(n)
	}
	return nil
}
