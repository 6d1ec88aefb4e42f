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
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
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
		return &Running{Name: p.Name, StateDir: p.StateDir, Socket: p.Socket, CgroupProcs: p.CgroupProcs}, nil
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

// StartContainer starts `exe container-init` (which must call ContainerInit) in
// new namespaces (ContainerFlags), to run argv in pool p with SocketEnv set, and
// with the given standard files. Wait for it with WaitContainer.
func StartContainer(exe string, p *Running, argv []string, stdin io.Reader, stdout, stderr io.Writer) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("run: no command")
	}
	args := []string{"container-init", "--hostname", p.Name}
	for _, f := range p.CgroupProcs {
		args = append(args, "--cgroup-procs", f)
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
	return cmd, nil
}

// WaitContainer forwards our signals to the container until it exits, and
// returns the shell convention's status: the init's exit code (the command's,
// see ContainerInit), or 128+n when the init itself died of signal n.
func WaitContainer(cmd *exec.Cmd) (int, error) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
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

// ContainerInit is the first process of a container (pid 1 of its PID
// namespace, started by StartContainer). It joins the pool's cgroups, makes its
// mounts private (nothing it mounts reaches the host, and the reverse), mounts a
// /proc of the new PID namespace, sets the hostname, then runs argv as its child
// and stays as the namespace's init: it reaps every orphan that the kernel gives
// it, forwards the signals it receives to argv, and exits with argv's status
// (128+n when argv died of signal n). Exiting kills whatever argv left running
// in the namespace.
//
// Why not exec argv as pid 1: the kernel drops signals a pid 1 has no handler
// for, even SIGKILL from inside the namespace, so `kill $$`, Ctrl-C or a
// forwarded SIGTERM would do nothing to most commands, and orphans would stay
// zombies. The command therefore runs as a child of pid 1.
//
// It returns only on error before argv started; otherwise it exits the process.
func ContainerInit(procsFiles []string, hostname string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("container-init: no command")
	}
	if os.Getpid() != 1 {
		return errors.New("container-init: not the first process of a PID namespace (use polytropon run)")
	}
	// First, so that argv and all it starts are in the pool from their first
	// instruction.
	for _, f := range procsFiles {
		if err := os.WriteFile(f, pidString(os.Getpid()), 0); err != nil {
			return fmt.Errorf("container-init: enter cgroup: %w", err)
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("container-init: make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("container-init: mount /proc: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("container-init: hostname: %w", err)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("container-init: %w", err)
	}
	// Subscribed before the fork: a command that exits at once must not be
	// missed.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	// Raw fork/exec rather than os/exec: we reap with wait4(-1), which would race
	// with exec.Cmd.Wait on the same pid.
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
	})
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
