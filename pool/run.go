package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/netstack"
)

// SocketEnv is the environment variable through which a container finds its
// pool's service socket.
const SocketEnv = "POLYTROPON_SOCKET"

// Running is a pool as a running serve published it in its run directory.
type Running struct {
	Name        string
	StateDir    string
	Socket      string
	CgroupProcs []string // cgroup.procs files to write a pid to, to join the pool
	Netns       string   // the pool's network namespace file; empty: no network
	UID, GID    uint32   // the pool's user
}

// Lookup finds pool name of the serve running with runDir. It fails, naming the
// pools there are, when the pool is unknown, and when no serve holds runDir's
// lock (its record would describe pools that are gone).
func Lookup(runDir, name string) (*Running, error) {
	lf, err := os.Open(filepath.Join(runDir, "serve.lock"))
	if err != nil {
		return nil, fmt.Errorf("no serve running with run_dir %s: %w", runDir, err)
	}
	defer lf.Close()
	// Taking the lock, even shared, means nobody holds it: serve is gone.
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(lf.Fd()), unix.LOCK_UN)
		return nil, fmt.Errorf("no serve running with run_dir %s", runDir)
	}
	data, err := os.ReadFile(filepath.Join(runDir, "pools.json"))
	if err != nil {
		return nil, fmt.Errorf("serve's record of its pools: %w", err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("serve's record of its pools %s: %w", filepath.Join(runDir, "pools.json"), err)
	}
	var names []string
	for _, p := range rec.Pools {
		if p.Name != name {
			names = append(names, p.Name)
			continue
		}
		if p.Socket == "" || len(p.CgroupProcs) == 0 {
			return nil, fmt.Errorf("pool %q is not started yet (serve is still starting)", name)
		}
		r := &Running{Name: p.Name, StateDir: p.StateDir, Socket: p.Socket, CgroupProcs: p.CgroupProcs, UID: p.UID, GID: p.GID}
		if p.Netns != "" {
			r.Netns = netstack.Existing(p.Netns, p.HostIf).NetnsPath
		}
		return r, nil
	}
	sort.Strings(names)
	return nil, fmt.Errorf("no pool %q in the serve of %s; its pools: %s", name, runDir, strings.Join(names, ", "))
}

// ContainerFlags are the namespaces a container gets: its own mounts, pids,
// hostname and System V IPC.
const ContainerFlags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

// forwarded are the signals a container's parent and its init pass on to the
// command; SIGKILL and SIGSTOP cannot be caught, and SIGCHLD is the init's own.
var forwarded = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT,
}

// ContainerOptions are what StartContainer gives a container beyond its pool.
type ContainerOptions struct {
	// Rootfs is a filesystem instance of the pool's service to use as the
	// container's root (see ContainerInit); empty: the host's root.
	Rootfs string
	// TTY gives the command the foreground of the terminal on standard input
	// (see ContainerInit); Container.Wait takes it back.
	TTY bool
	// AsRoot keeps a --rootfs container's command uid 0 (with the confined
	// capabilities); by default it runs as the pool's uid and gid.
	AsRoot bool
}

// Container is a started container, until Wait.
type Container struct {
	Cmd  *exec.Cmd
	tty  bool
	sigs chan os.Signal // our signals, caught from before the start
}

// StartContainer starts `exe container-init` (which must call ContainerInit) in
// new namespaces (ContainerFlags), to run argv in pool p with SocketEnv set, and
// with the given standard files. Wait for it with Wait.
//
// Our signals are caught from before the start on, and Wait forwards them: a
// SIGTERM that arrives once the command runs must reach it, not end us with
// the default action before Wait is called.
func StartContainer(exe string, p *Running, o ContainerOptions, argv []string, stdin io.Reader, stdout, stderr io.Writer) (_ *Container, err error) {
	if len(argv) == 0 {
		return nil, errors.New("run: no command")
	}
	c := &Container{tty: o.TTY, sigs: make(chan os.Signal, 8)}
	signal.Notify(c.sigs, forwarded...)
	defer func() {
		if err != nil {
			signal.Stop(c.sigs)
		}
	}()
	args := []string{"container-init", "--hostname", p.Name}
	for _, f := range p.CgroupProcs {
		args = append(args, "--cgroup-procs", f)
	}
	if p.Netns != "" {
		args = append(args, "--netns", p.Netns)
	}
	if o.Rootfs != "" {
		args = append(args, "--rootfs", o.Rootfs)
		if !o.AsRoot {
			args = append(args, "--uid", fmt.Sprint(p.UID), "--gid", fmt.Sprint(p.GID))
		}
	}
	if o.TTY {
		args = append(args, "--tty")
	}
	args = append(args, "--")
	args = append(args, argv...)
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	env := []string{SocketEnv + "=" + p.Socket}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, SocketEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	// Pdeathsig: the container must not outlive the `run` that owns its exit code.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: ContainerFlags, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run: start the container: %w", err)
	}
	c.Cmd = cmd
	return c, nil
}

// ForegroundTerminal reports whether in is a terminal whose foreground process
// group is ours: only then may a container's command be given the terminal.
func ForegroundTerminal(in io.Reader) bool {
	f, ok := in.(*os.File)
	if !ok {
		return false
	}
	fd := int(f.Fd())
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return false
	}
	pg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pg == unix.Getpgrp()
}

// Wait forwards our signals to the container until it exits (those caught
// since StartContainer first), and returns the shell convention's status: the
// init's exit code (the command's, see ContainerInit), or 128+n when the init
// itself died of signal n.
//
// With ContainerOptions.TTY, the terminal on our standard input is given back
// to our process group once the container is gone (the command had it).
func (c *Container) Wait() (int, error) {
	cmd := c.Cmd
	if c.tty {
		// We are a background process group while the command holds the
		// terminal: taking it back must not stop us (SIGTTOU).
		signal.Ignore(syscall.SIGTTOU)
		defer func() {
			_ = unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, unix.Getpgrp())
			signal.Reset(syscall.SIGTTOU)
		}()
	}
	defer signal.Stop(c.sigs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-c.sigs:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			return exitStatus(cmd.ProcessState, err)
		}
	}
}

func exitStatus(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		return 0, err
	}
	ws := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return 0, fmt.Errorf("run: unexpected wait status %v", ws)
}

// InitOptions are ContainerInit's: what StartContainer passes as flags.
type InitOptions struct {
	ProcsFiles []string // cgroup.procs files of the pool
	Hostname   string
	Netns      string // network namespace file to join; empty: the host's
	Rootfs     string // filesystem instance to use as root; empty: the host's root
	TTY        bool   // put the command in its own process group, in the terminal's foreground
	// User, when set, is the uid and gid the command runs as (no
	// supplementary groups).
	User *syscall.Credential
}

// ContainerInit is the first process of a container (pid 1 of its PID
// namespace, started by StartContainer). It joins the pool's cgroups, makes its
// mounts private (nothing it mounts reaches the host, and the reverse), joins the
// pool's network namespace when it has one, mounts the root filesystem instance
// (o.Rootfs, see below), mounts a /proc of the new PID namespace, sets the
// hostname, then runs argv as its child and stays as the namespace's init: it
// reaps every orphan that the kernel gives it, forwards the signals it receives
// to argv, and exits with argv's status (128+n when argv died of signal n).
// Exiting kills whatever argv left running in the namespace.
//
// Why not exec argv as pid 1: the kernel drops signals a pid 1 has no handler
// for, even SIGKILL from inside the namespace, so `kill $$`, Ctrl-C or a
// forwarded SIGTERM would do nothing to most commands, and orphans would stay
// zombies. The command therefore runs as a child of pid 1.
//
// With o.Rootfs, the container's root is the pool's instance through the FUSE
// gateway: the init starts the gateway (ContainerFUSE, a second process of the
// container, its child, in its namespaces and cgroups, so on the pool's cores
// and memory), which dials the pool's service (SocketEnv) and mounts the
// instance on a mount point in a tmpfs of the container's mount namespace; the
// init puts a /proc and a minimal /dev (a tmpfs with null, zero, full, random,
// urandom and tty bound from the host) in it, and pivot_roots into it, detaching
// the old root. The mount exists in the container's mount namespace only, and
// lives exactly as long as the container: when the command exits, the init
// exits, the kernel kills the gateway with the rest of the PID namespace, and
// the mount namespace and the FUSE connection go with them. The instance must
// hold /proc and /dev directories (mount points), and argv[0] is looked up in
// it. The service's socket is not reachable from inside that root, so the
// gateway does not reconnect when the service restarts: the container's file
// operations fail from then on (EIO).
//
// With o.TTY (standard input is the terminal `run` has in its foreground), the
// command gets its own process group and the foreground of the terminal, so
// that Ctrl-C and Ctrl-Z reach it and not run or the init.
//
// It returns only on error before argv started; otherwise it exits the process.
func ContainerInit(o InitOptions, argv []string) error {
	if len(argv) == 0 {
		return errors.New("container-init: no command")
	}
	if os.Getpid() != 1 {
		return errors.New("container-init: not the first process of a PID namespace (use polytropon run)")
	}
	// First, so that argv and all it starts are in the pool from their first
	// instruction.
	for _, f := range o.ProcsFiles {
		if err := os.WriteFile(f, pidString(os.Getpid()), 0); err != nil {
			return fmt.Errorf("container-init: enter cgroup: %w", err)
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("container-init: make mounts private: %w", err)
	}
	// The command is forked by this goroutine, so from this thread: the
	// namespace it has when it forks is the command's. The thread stays locked
	// for the life of the process.
	runtime.LockOSThread()
	if o.Netns != "" {
		if err := joinNetns(o.Netns); err != nil {
			return fmt.Errorf("container-init: %w", err)
		}
	}
	if o.Rootfs != "" {
		// /proc/self/exe, not os.Executable: the binary may be under /tmp,
		// which enterRootfs covers before it starts the gateway.
		if err := enterRootfs("/proc/self/exe", o.Rootfs); err != nil {
			return fmt.Errorf("container-init: --rootfs %s: %w", o.Rootfs, err)
		}
	} else if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("container-init: mount /proc: %w", err)
	}
	if err := unix.Sethostname([]byte(o.Hostname)); err != nil {
		return fmt.Errorf("container-init: hostname: %w", err)
	}
	if o.Rootfs != "" {
		// The command is the tenant's image's: confine it (the init keeps
		// its capabilities; the thread that forks the command does not).
		if err := confineCommand(); err != nil {
			return fmt.Errorf("container-init: %w", err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("container-init: %w", err)
	}
	// Subscribed before the fork: a command that exits at once must not be
	// missed.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{}}
	if o.TTY {
		// The child makes its group the terminal's foreground (Ctty is fd 0)
		// between fork and exec.
		attr.Sys.Setpgid, attr.Sys.Foreground, attr.Sys.Ctty = true, true, 0
	}
	if o.User != nil {
		attr.Sys.Credential = &syscall.Credential{Uid: o.User.Uid, Gid: o.User.Gid, Groups: []uint32{}}
	}
	// Raw fork/exec rather than os/exec: we reap with wait4(-1), which would race
	// with exec.Cmd.Wait on the same pid.
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return fmt.Errorf("container-init: start %s: %w", path, err)
	}
	for s := range sigs {
		if s != syscall.SIGCHLD {
			_ = syscall.Kill(pid, s.(syscall.Signal))
			continue
		}
		for {
			var ws syscall.WaitStatus
			got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if got <= 0 || err != nil {
				break
			}
			if got != pid {
				continue
			}
			if ws.Signaled() {
				os.Exit(128 + int(ws.Signal()))
			}
			os.Exit(ws.ExitStatus())
		}
	}
	return nil
}
