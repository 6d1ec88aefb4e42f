package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPty returns a new pseudo-terminal's master and slave.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// ptyOutput collects what the terminal shows.
type ptyOutput struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (o *ptyOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// runOnTTY starts `polytropon run ARGS` as the session leader of a new
// terminal, as a shell would in the foreground.
func runOnTTY(t *testing.T, args ...string) (*exec.Cmd, *os.File, *ptyOutput) {
	t.Helper()
	master, slave := openPty(t)
	cmd := exec.Command(os.Args[0], append([]string{"run"}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	out := &ptyOutput{}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			out.mu.Lock()
			out.buf.Write(b[:n])
			out.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return cmd, master, out
}

func ttyExitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func TestRunTTY(t *testing.T) {
	e := newServeEnv(t)
	serve := startServe(t, e)
	runDir := filepath.Join(e.dir, "run")

	// The command owns the terminal's foreground: Ctrl-C typed on it kills the
	// command (not run, not the init), and run reports 128+SIGINT.
	cmd, master, out := runOnTTY(t, "--run-dir", runDir, "--pool", e.pool, "--", "sh", "-c", "echo ready; exec sleep 60")
	waitFor(t, "the command's ready line", func() bool { return strings.Contains(out.String(), "ready") })
	fg, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPGRP)
	if err != nil {
		t.Fatal(err)
	}
	if fg == cmd.Process.Pid {
		t.Errorf("the terminal's foreground is still run's group %d", fg)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", fg)); string(comm) != "sleep\n" {
		t.Errorf("the terminal's foreground group %d leads %q, want the command (sleep)", fg, comm)
	}
	if _, err := master.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	if code := ttyExitCode(t, cmd); code != 128+int(syscall.SIGINT) {
		t.Errorf("Ctrl-C: run exited %d, want 130; terminal:\n%s", code, out.String())
	}

	// On a terminal too, exit codes pass through, and SIGTERM sent to run
	// reaches the command.
	cmd, _, out = runOnTTY(t, "--run-dir", runDir, "--pool", e.pool, "--", "sh", "-c", "exit 3")
	if code := ttyExitCode(t, cmd); code != 3 {
		t.Errorf("exit 3 on a terminal: %d\n%s", code, out.String())
	}
	cmd, _, out = runOnTTY(t, "--run-dir", runDir, "--pool", e.pool, "--", "sh", "-c", "echo ready; exec sleep 60")
	waitFor(t, "the command's ready line", func() bool { return strings.Contains(out.String(), "ready") })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := ttyExitCode(t, cmd); code != 128+int(syscall.SIGTERM) {
		t.Errorf("SIGTERM to run on a terminal: %d, want 143\n%s", code, out.String())
	}
	if pids := e.servicePids(t); len(pids) != 1 {
		t.Errorf("pool cgroup holds %v after the containers exited", pids)
	}
	stopServe(t, e, serve)
}
