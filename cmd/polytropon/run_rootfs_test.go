package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/testenv"
)

// busybox is the static shell the root filesystem test puts in its image
// (Debian's busybox-static, scripts/apt-packages.txt).
const busybox = "/bin/busybox"

func TestRunRootfs(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	e, serve, runDir, upper, img, marker := newRootfsEnv(t)

	ensureFusectl(t)
	// The command stops before its exit for a line on stdin: meanwhile the
	// test sees the FUSE connection of the container's root.
	script := `cat /etc/marker; ls /; stat -c %d /; echo written >/etc/new; echo ok >/dev/null; grep -c container-init /proc/1/cmdline; grep -l 'container-fus[e]' /proc/[0-9]*/cmdline | grep -c cmdline; echo waiting; read x; exit 5`
	cmd := exec.Command(os.Args[0], "run", "--run-dir", runDir, "--pool", e.pool, "--rootfs", "root", "--root", "--",
		"/bin/busybox", "sh", "-c", "export PATH=/bin; for c in cat ls stat grep; do busybox ln -s busybox /bin/$c 2>/dev/null; done; "+script)
	var errb strings.Builder
	cmd.Stderr = &errb
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ob strings.Builder
	br := bufio.NewReader(stdout)
	var conn string
	for {
		l, err := br.ReadString('\n')
		if l == "waiting\n" {
			// The line before the two counts is the root's device.
			ls := strings.Split(strings.TrimSpace(ob.String()), "\n")
			if dev, err := strconv.ParseUint(ls[len(ls)-3], 10, 64); err == nil {
				conn = filepath.Join("/sys/fs/fuse/connections", strconv.Itoa(int(unix.Minor(dev))))
				if _, err := os.Stat(conn); err != nil {
					t.Errorf("while the container runs, its root's FUSE connection: %v", err)
				}
			}
			stdin.Close()
			continue
		}
		ob.WriteString(l)
		if err != nil {
			break
		}
	}
	code := 0
	var ee *exec.ExitError
	if err := cmd.Wait(); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	out, stderr := ob.String(), errb.String()
	if code != 5 || conn == "" {
		t.Fatalf("exit status %d, want 5; stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	t.Logf("in the container:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || lines[0]+"\n" != marker {
		t.Fatalf("the container did not read the image's marker:\n%s\nstderr:\n%s", out, stderr)
	}
	// ls / lists exactly the image's top level: the host's root is gone.
	var top []string
	for _, l := range lines[1 : len(lines)-3] {
		top = append(top, strings.Fields(l)...)
	}
	if got := strings.Join(top, " "); got != "bin dev etc proc" {
		t.Errorf("ls / in the container: %q, want the image's \"bin dev etc proc\"", got)
	}
	// /proc is the new PID namespace's: pid 1 is the init, and the FUSE
	// gateway is one of the container's processes.
	if init, gw := lines[len(lines)-2], lines[len(lines)-1]; init != "1" || gw != "1" {
		t.Errorf("/proc: pid 1 is the init: %s, gateways: %s; want 1 and 1", init, gw)
	}
	// The write went through the union into its upper layer, through the
	// service; the image is untouched.
	if b, err := os.ReadFile(filepath.Join(upper, "etc", "new")); err != nil || string(b) != "written\n" {
		t.Errorf("upper layer after the container wrote /etc/new: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(img, "etc", "new")); !os.IsNotExist(err) {
		t.Errorf("the read-only image layer was written: %v", err)
	}
	// The root was a FUSE mount (connection id = the device's minor), and it
	// is gone with the container.
	dev, err := strconv.ParseUint(lines[len(lines)-3], 10, 64)
	if err != nil {
		t.Fatalf("stat -c %%d /: %q", lines[len(lines)-3])
	}
	if unix.Major(dev) != 0 {
		t.Errorf("the container's root is device %d:%d, not a FUSE (anonymous) device", unix.Major(dev), unix.Minor(dev))
	}
	waitFor(t, "the container's FUSE connection "+conn+" to go", func() bool {
		_, err := os.Stat(conn)
		return os.IsNotExist(err)
	})
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), fmt.Sprintf(" 0:%d ", unix.Minor(dev))) {
		t.Errorf("the container's root mount reached the host:\n%s", mi)
	}

	// Bad input: an unknown instance names those there are; an instance
	// without /proc and /dev is refused with the reason.
	if _, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--rootfs", "nosuch", "--", "/bin/busybox", "true"); code != 1 ||
		!strings.Contains(stderr, `no filesystem "nosuch"`) || !strings.Contains(stderr, "it has: root") {
		t.Errorf("unknown instance: %d %q", code, stderr)
	}
	// The image changes on the host, behind the service: its layers see it
	// within their revalidation bounds (1 s each by default), not at once.
	if err := os.Rename(filepath.Join(img, "dev"), filepath.Join(img, "nodev")); err != nil {
		t.Fatal(err)
	}
	var (
		nodevErr  string
		nodevCode int
	)
	waitFor(t, "the host's removal of the image's /dev to reach the service", func() bool {
		_, nodevErr, nodevCode = runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--rootfs", "root", "--", "/bin/busybox", "true")
		return nodevCode != 0
	})
	if nodevCode != 1 || !strings.Contains(nodevErr, "no /dev directory") {
		t.Errorf("instance without /dev: %d %q", nodevCode, nodevErr)
	}
	if pids := e.servicePids(t); len(pids) != 1 {
		t.Errorf("pool cgroup holds %v after the containers exited", pids)
	}

	// SIGKILL of run, while the container reads from its root: the init dies
	// (parent-death signal), the kernel kills the gateway and the command, and
	// nothing stays behind waiting for a FUSE answer.
	if err := os.Rename(filepath.Join(img, "nodev"), filepath.Join(img, "dev")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the image's /dev to come back in the service", func() bool {
		_, _, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--rootfs", "root", "--", "/bin/busybox", "true")
		return code == 0
	})
	killed := exec.Command(os.Args[0], "run", "--run-dir", runDir, "--pool", e.pool, "--rootfs", "root", "--root", "--",
		"/bin/busybox", "sh", "-c", "echo up; while :; do /bin/busybox cat /bin/busybox >/dev/null; done")
	kout, err := killed.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(kout).ReadString('\n'); l != "up\n" {
		t.Fatalf("%q %v", l, err)
	}
	if err := killed.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = killed.Wait()
	waitFor(t, "the killed container's processes to go", func() bool { return len(e.servicePids(t)) == 1 })
	stopServe(t, e, serve)
}

// ensureFusectl mounts the FUSE control filesystem where it is not: the test
// reads the container's connection there.
func ensureFusectl(t *testing.T) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), " /sys/fs/fuse/connections fusectl ") {
		return
	}
	if err := unix.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, ""); err != nil {
		testenv.SkipOrFail(t, "the rootfs test reads FUSE connections in fusectl: "+err.Error())
	}
}

// newRootfsEnv starts serve with one pool whose instance "root" is a union of
// an empty upper layer over a read-only image layer holding a static busybox
// and /etc/marker.
func newRootfsEnv(t *testing.T) (e *serveEnv, serve *exec.Cmd, runDir, upper, img, marker string) {
	t.Helper()
	bb, err := os.ReadFile(busybox)
	if err != nil {
		testenv.SkipOrFail(t, "the rootfs test needs a static busybox (busybox-static): "+err.Error())
	}
	// An image layer (read-only) under an empty upper layer: the container
	// boots from their union, served at user level.
	img = t.TempDir()
	upper = t.TempDir()
	marker = fmt.Sprintf("only-in-the-image-%d\n", os.Getpid())
	for _, d := range []string{"bin", "proc", "dev", "etc"} {
		if err := os.Mkdir(filepath.Join(img, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(img, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(img, "etc", "marker"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{img, upper} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The service runs as the pool's user, which must be able to write the
	// upper layer.
	if err := os.Chown(upper, poolUID, poolGID); err != nil {
		t.Fatal(err)
	}
	e = newServeEnvWith(t, "", fmt.Sprintf(`    filesystems:
      - name: root
        stack: [{union: {}}]
        branches:
          - passthrough: {dir: %s}
          - passthrough: {dir: %s, readonly: true}
`, upper, img))
	serve = startServe(t, e)
	runDir = filepath.Join(e.dir, "run")
	return e, serve, runDir, upper, img, marker
}

// TestRunRootfsConfined: the command of a --rootfs container (the tenant's
// image's) runs as the pool's uid and gid by default, and with --root as uid 0
// without the capabilities that would let it out; either way no mount, no
// mknod of a device, /proc/sys read-only, the bounding set cut to the container
// set, no_new_privs.
func TestRunRootfsConfined(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	e, serve, runDir, _, _, _ := newRootfsEnv(t)
	defer stopServe(t, e, serve)
	// Applets called through busybox: the pool's user cannot add links to
	// the image's /bin.
	script := `busybox id -u; busybox id -g; busybox grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status; ` +
		`busybox mount -t tmpfs none /etc 2>/dev/null && echo mount:ok || echo mount:refused; ` +
		`busybox mknod /etc/sda b 8 0 2>/dev/null && echo mknod:ok || echo mknod:refused; ` +
		`echo x 2>/dev/null >/proc/sys/kernel/domainname && echo sysctl:ok || echo sysctl:refused; ` +
		`echo x 2>/dev/null >/etc/written && echo etc:ok || echo etc:refused; ` +
		`echo x >/dev/null && echo devnull:ok; busybox cat /etc/marker >/dev/null && echo read:ok`
	for _, tc := range []struct {
		root     bool
		uid, gid int
	}{{false, poolUID, poolGID}, {true, 0, 0}} {
		args := []string{"run", "--run-dir", runDir, "--pool", e.pool, "--rootfs", "root"}
		if tc.root {
			args = append(args, "--root")
		}
		args = append(args, "--", "/bin/busybox", "sh", "-c", script)
		out, err := exec.Command(os.Args[0], args...).CombinedOutput()
		if err != nil {
			t.Fatalf("run %v: %v\n%s", args, err, out)
		}
		got := string(out)
		lines := strings.Split(got, "\n")
		if len(lines) < 2 || lines[0] != strconv.Itoa(tc.uid) || lines[1] != strconv.Itoa(tc.gid) {
			t.Errorf("--root %v: uid and gid %q, want %d %d", tc.root, lines[:min(2, len(lines))], tc.uid, tc.gid)
		}
		want := []string{"mount:refused", "mknod:refused", "sysctl:refused", "devnull:ok", "read:ok", "NoNewPrivs:\t1"}
		if tc.root {
			want = append(want, "etc:ok") // root owns the image's /etc
		} else {
			want = append(want, "etc:refused") // the pool's user does not
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("--root %v: no %q in:\n%s", tc.root, w, got)
			}
		}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) != 2 || (f[0] != "CapBnd:" && f[0] != "CapEff:") {
				continue
			}
			v, err := strconv.ParseUint(f[1], 16, 64)
			if err != nil || v&(1<<unix.CAP_SYS_ADMIN) != 0 || v&(1<<unix.CAP_MKNOD) != 0 {
				t.Errorf("--root %v: %s %s has CAP_SYS_ADMIN or CAP_MKNOD", tc.root, f[0], f[1])
			}
			if f[0] == "CapBnd:" && v&(1<<unix.CAP_CHOWN) == 0 {
				t.Errorf("--root %v: %s %s lost CAP_CHOWN, which the container set keeps", tc.root, f[0], f[1])
			}
			if f[0] == "CapEff:" && (v != 0) != tc.root {
				t.Errorf("--root %v: CapEff %s", tc.root, f[1])
			}
		}
	}
}
