package pool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	o, err := fslib.ForInstance(fslib.DialOptions{Socket: os.Getenv(SocketEnv)}, inst)
	if err != nil {
		return fmt.Errorf("the pool's service: %w", err)
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
	// AllowOther: the command may run as the pool's user, not the mounter;
	// the kernel still checks permission bits.
	srv, err := fusegw.Mount(mountpoint, fsys, fusegw.Options{Name: "polytropon:" + inst, AllowOther: true})
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
	// Until pivot_root the host's tree is visible here, and the instance is the
	// tenant's: a /proc or /dev that is (or becomes, between two lookups) a
	// symlink would point our mounts and file creations at host paths. So
	// /dev is built in the private stage, never through the instance, and
	// both are mounted on the instance's directories through O_PATH|O_NOFOLLOW
	// descriptors, which pin the directories the checks saw.
	var pins [2]int
	for i, d := range []string{"proc", "dev"} {
		fd, err := unix.Open(filepath.Join(root, d), unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("the instance has no /%s directory to mount on (%w)", d, err)
		}
		defer unix.Close(fd)
		pins[i] = fd
	}
	pinned := func(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }
	if err := unix.Mount("proc", pinned(pins[0]), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	dev := filepath.Join(rootfsStage, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		return err
	}
	// nodev: the device nodes below are bind mounts, each its own mount; no
	// node made in this tmpfs (mknod) opens a device.
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, "size=64k,mode=0755"); err != nil {
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
	if err := unix.Mount(dev, pinned(pins[1]), "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move /dev into the root: %w", err)
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
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// The container shares the host's kernel: its root may read /proc/sys but
	// not set the host's sysctls (core_pattern would run a program as root on
	// the host), nor trigger sysrq.
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	return nil
}

// containerCaps are the capabilities a --rootfs container's command keeps:
// Docker's default set without CAP_MKNOD (there is no device cgroup here to
// make a node useless). Without CAP_SYS_ADMIN it cannot mount (over its /proc
// read-only parts, or a cgroup hierarchy to leave the pool's), nor load
// modules, reach raw I/O, trace, or reconfigure the network.
var containerCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID, unix.CAP_KILL,
	unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE,
	unix.CAP_NET_RAW, unix.CAP_SYS_CHROOT, unix.CAP_AUDIT_WRITE, unix.CAP_SETFCAP,
}

// confineCommand limits what the calling thread's next exec may do: the
// capability bounding set cut to containerCaps (for root the exec'd program's
// permitted set is its bounding set) and no_new_privs (no set-uid or file
// capability gains). Both are per thread and inherited over fork: call it on
// the locked thread that forks the command, after the mounts that need
// CAP_SYS_ADMIN.
func confineCommand() error {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return err
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("cap_last_cap: %w", err)
	}
	keep := map[uintptr]bool{}
	for _, c := range containerCaps {
		keep[c] = true
	}
	for c := uintptr(0); c <= uintptr(last); c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}
