package pool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/service/fusegw"
)

// rootfsStage is where the gateway mounts the root instance before pivot_root:
// on rootfsStage/root in a tmpfs of its own over the host's /tmp, in the
// container's mount namespace, so that nothing (not even an empty mount point)
// is created on the host. The gateway mounts the tmpfs once it has dialed the
// service, whose socket may well be under /tmp.
const rootfsStage = "/tmp"

// devNodes are bound from the host into the container's /dev: what programs
// expect to find whatever they do.
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// ContainerFUSE is the FUSE gateway of a container's root (`polytropon
// container-fuse`, started by ContainerInit): it dials the pool's service
// (SocketEnv), mounts a tmpfs on stage and its instance inst at stage/root,
// writes "ready\n" to ready
// and serves until it is killed (with the container's PID namespace) or the
// mount goes.
//
// Why a process of its own rather than goroutines of the init: every process the
// init forks holds a copy of the init's descriptors until its execve completes,
// and that execve reads the program from this very mount. Were /dev/fuse among
// them, a gateway dying at that moment (the container killed) would leave the
// connection open with nobody to answer: the exec'ing child would wait, in an
// uninterruptible sleep, forever, and with it the init and `run`. The gateway
// forks nothing, so when it dies the connection is aborted and every waiter gets
// an error.
func ContainerFUSE(inst, stage string, ready *os.File) error {
	o := fslib.DialOptions{Socket: os.Getenv(SocketEnv)}
	mounts, err := fslib.ServiceMounts(o)
	if err != nil {
		return err
	}
	var names []string
	for _, m := range mounts {
		names = append(names, m.Name)
		if m.Name == inst {
			o.Prefix = m.Prefix
		}
	}
	if o.Prefix == "" {
		return fmt.Errorf("the pool's service has no filesystem %q (it has: %s)", inst, strings.Join(names, ", "))
	}
	fsys, err := fslib.DialFS(o)
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0700"); err != nil {
		return fmt.Errorf("tmpfs at %s: %w", stage, err)
	}
	mountpoint := filepath.Join(stage, "root")
	if err := os.Mkdir(mountpoint, 0o755); err != nil {
		return err
	}
	// The kernel's page cache stays on: a root filesystem is mostly executables
	// and libraries, mapped and re-read; nothing else writes this instance's
	// files while the container runs unless the pool shares it on purpose.
	srv, err := fusegw.Mount(mountpoint, fsys, fusegw.Options{Name: "polytropon:" + inst})
	if err != nil {
		return err
	}
	if _, err := ready.WriteString("ready\n"); err != nil {
		return err
	}
	ready.Close()
	srv.Wait()
	return nil
}

// enterRootfs starts the gateway of instance inst (ContainerFUSE, as `exe
// container-fuse`) and makes its mount the calling process's root (see
// ContainerInit). It runs in the container's fresh, private mount namespace.
func enterRootfs(exe, inst string) error {
	root := filepath.Join(rootfsStage, "root")
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	// Raw ForkExec, as for the command: the init reaps with wait4(-1). The
	// gateway's errors go to our standard error.
	_, err = syscall.ForkExec(exe, []string{exe, "container-fuse", "--rootfs", inst, "--stage", rootfsStage}, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2, pw.Fd()},
	})
	pw.Close()
	if err != nil {
		pr.Close()
		return fmt.Errorf("start the gateway: %w", err)
	}
	line, _ := bufio.NewReader(pr).ReadString('\n')
	pr.Close()
	if line != "ready\n" {
		return errors.New("the FUSE gateway failed (its error is above)")
	}
	for _, d := range []string{"proc", "dev"} {
		if st, err := os.Stat(filepath.Join(root, d)); err != nil || !st.IsDir() {
			return fmt.Errorf("the instance has no /%s directory to mount on", d)
		}
	}
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	dev := filepath.Join(root, "dev")
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("tmpfs at /dev: %w", err)
	}
	for _, n := range devNodes {
		target := filepath.Join(dev, n)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount(filepath.Join("/dev", n), target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	for _, l := range [][2]string{{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}} {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return err
		}
	}
	// pivot_root(".", "."): the old root ends up stacked on the new one, and is
	// detached at once, so no directory for it is needed in the instance.
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return unix.Chdir("/")
}
