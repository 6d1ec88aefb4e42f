// Package svcproc runs the filesystem service a measurement needs as a child
// process, for perf/pathperf (`polytropon perf paths`) and perf/harness (`perf
// run`, `perf paper`, `perf isolation`): its configuration (Config, with the
// default stack of the design), its start (Start waits for the word "ready" on
// its stdout), its stop in order (Stop: SIGTERM, exit status 0 expected,
// SIGKILL after a timeout), and the FUSE mounts it must not leave behind
// (MountPoints, IsMounted, Detach).
//
// Contract: whatever fails, a Service that Start returned is gone after Stop,
// and no mount it was configured to make is left (a mount found left is
// detached and reported as an error, since the service should have unmounted
// it). Start on error leaves no process and no mount. The child runs in its own
// process group, so a terminal's ^C reaches only its parent, which stops it in
// order, and the kernel SIGTERMs it if the parent dies (PR_SET_PDEATHSIG).
//
// Lock order: the package has no lock of its own (tailbuf.Buffer's is a leaf).
// It measures nothing itself; its callers' commands measure through it.
package svcproc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/tailbuf"
)

const (
	// readyTimeout bounds the service's start: building the stack and mounting.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds its graceful stop after SIGTERM, which may wait up to 10 s
	// for the kernel to release the FUSE mount and then flushes the write-back cache.
	stopTimeout = 30 * time.Second
)

// Service is a filesystem service child process started by Start.
type Service struct {
	cmd         *exec.Cmd
	out         *tailbuf.Buffer
	mountpoints []string      // the FUSE mounts the service makes
	exited      chan struct{} // closed once Wait returned; waitErr is set then
	waitErr     error
}

// Start runs command(cfgPath) and waits for a line containing the word "ready"
// on its stdout. mountpoints are the FUSE mounts the service makes (empty ones
// are ignored), which Stop makes sure are gone. On error the process is gone
// and no mount is left.
func Start(command func(cfgPath string) *exec.Cmd, cfgPath string, mountpoints ...string) (*Service, error) {
	cmd := command(cfgPath)
	if cmd == nil {
		return nil, errors.New("svcproc: the service command is nil")
	}
	s := &Service{cmd: cmd, out: &tailbuf.Buffer{}, exited: make(chan struct{})}
	for _, m := range mountpoints {
		if m != "" {
			s.mountpoints = append(s.mountpoints, m)
		}
	}
	if cmd.Stderr == nil {
		cmd.Stderr = s.out
	}
	if cmd.SysProcAttr == nil {
		// Its own process group keeps a terminal's ^C away from the service: the
		// run is canceled and stops it in order. If this process dies without
		// stopping it, the kernel does (gracefully: it unmounts).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("svcproc: service command: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("svcproc: starting the service (%s): %w", cmd.Path, err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(s.out, line)
			if !said && isReady(line) {
				said = true
				close(ready)
			}
		}
		// Wait only once the pipe is drained (os/exec's rule).
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.exited:
		err = fmt.Errorf("svcproc: the service exited before it was ready (%v); its output:\n%s", s.waitErr, s.out)
	case <-time.After(readyTimeout):
		_ = cmd.Process.Kill()
		<-s.exited
		err = fmt.Errorf("svcproc: the service was not ready after %v and was killed; its output:\n%s", readyTimeout, s.out)
	}
	return nil, errors.Join(err, s.unmount())
}

func isReady(line string) bool {
	for _, w := range strings.Fields(line) {
		if w == "ready" {
			return true
		}
	}
	return false
}

// Pid is the service's process id.
func (s *Service) Pid() int { return s.cmd.Process.Pid }

// Output is the tail of the service's output, for error messages.
func (s *Service) Output() string { return s.out.String() }

// Stop SIGTERMs the service and waits for exit status 0, SIGKILLs it if it does
// not stop in time, then makes sure its mounts are gone. It returns what went
// wrong.
func (s *Service) Stop() error {
	var errs []error
	select {
	case <-s.exited:
		errs = append(errs, s.exitError(false))
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
			errs = append(errs, s.exitError(true))
		case <-time.After(stopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.exited
			errs = append(errs, fmt.Errorf("svcproc: the service did not stop within %v of SIGTERM and was killed; its output:\n%s", stopTimeout, s.out))
		}
	}
	return errors.Join(append(errs, s.unmount())...)
}

// exitError describes the service's exit; terminated says Stop sent it SIGTERM. A
// death by another signal is a death during the run even if the SIGTERM was sent
// (the process may have been gone already when it was).
func (s *Service) exitError(terminated bool) error {
	if terminated && s.waitErr == nil {
		return nil
	}
	ws, _ := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if terminated && !(ws.Signaled() && ws.Signal() != syscall.SIGTERM) {
		return fmt.Errorf("svcproc: the service did not stop cleanly on SIGTERM (%v); its output:\n%s", s.waitErr, s.out)
	}
	return fmt.Errorf("svcproc: the service died during the run (%v); its output:\n%s", s.cmd.ProcessState, s.out)
}

// unmount makes sure the exited service's mount is gone. A mount found left is an
// error even when it could be detached: the service should have unmounted it.
func (s *Service) unmount() error {
	var errs []error
	for _, mp := range s.mountpoints {
		mounted, err := IsMounted(mp)
		if err != nil {
			errs = append(errs, err)
		} else if mounted {
			if err := Detach(mp); err != nil {
				errs = append(errs, fmt.Errorf("svcproc: the service left %s mounted and it could not be detached: %w", mp, err))
			} else {
				errs = append(errs, fmt.Errorf("svcproc: the service exited but left %s mounted (detached now)", mp))
			}
		}
	}
	return errors.Join(errs...)
}

// Detach lazily unmounts a FUSE mount whose server is gone: umount2 as root,
// fusermount3 otherwise.
func Detach(mountpoint string) error {
	err := unix.Unmount(mountpoint, unix.MNT_DETACH)
	if err == nil {
		return nil
	}
	out, ferr := exec.Command("fusermount3", "-u", "-z", mountpoint).CombinedOutput()
	if ferr != nil {
		return fmt.Errorf("umount2: %v; fusermount3: %v %s", err, ferr, strings.TrimSpace(string(out)))
	}
	return nil
}

// IsMounted reports whether mountpoint is a mount point in this process's mount
// namespace.
func IsMounted(mountpoint string) (bool, error) {
	mps, err := MountPoints()
	if err != nil {
		return false, err
	}
	want := filepath.Clean(mountpoint)
	for _, mp := range mps {
		if mp == want {
			return true, nil
		}
	}
	return false, nil
}

// MountPoints lists the mount points of /proc/self/mountinfo (field 5, with the
// kernel's octal escapes of space, tab, newline and backslash undone).
func MountPoints() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("svcproc: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		out = append(out, unescapeMountinfo(f[4]))
	}
	return out, nil
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
