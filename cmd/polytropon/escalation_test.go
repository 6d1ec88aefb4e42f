package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
)

// The escalations of issue 18, tried by a pool's unprivileged user through
// every path to its service (fslib, a service's FUSE mount with allow_other,
// `polytropon mount` run by the user) and, for each, the same attempt by the
// same user against the kernel on the same kind of directory: the errno must
// be the kernel's every time, and a binary the user made setuid and tried to
// give file capabilities must not run as uid 0.

// escEnv=kernel:DIR or escEnv=fslib:SOCKET:SUBDIR makes the test binary run
// the attempts as whoever it runs as, one line per attempt: "NAME\tRESULT".
const escEnv = "POLYTROPON_ESC_TEST"

func init() {
	v := os.Getenv(escEnv)
	if v == "" {
		return
	}
	mode, arg, _ := strings.Cut(v, ":")
	var tg escTarget
	switch mode {
	case "kernel":
		tg = kernelTarget(arg)
	case "fslib":
		sock, sub, _ := strings.Cut(arg, ":")
		o, err := fslib.ForInstance(fslib.DialOptions{Socket: sock}, "data")
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		fsys, err := fslib.DialFS(o)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		tg = fslibTarget{fsys, sub}
	default:
		fmt.Println("unknown mode", mode)
		os.Exit(1)
	}
	for _, a := range escAttempts() {
		fmt.Printf("%s\t%s\n", a.name, errnoName(a.do(tg)))
	}
	os.Exit(0)
}

// escTarget is where the attempts act: the kernel on a directory, or a
// service's instance through fslib.
type escTarget interface {
	open(name string, flags int) error
	create(name string, data []byte, mode uint32) error
	truncate(name string, size int64) error
	chmod(name string, mode uint32) error
	chown(name string, uid, gid int) error // -1 leaves one unchanged
	setxattr(name, attr string, val []byte) error
}

type kernelTarget string

func (k kernelTarget) path(n string) string { return filepath.Join(string(k), n) }

func (k kernelTarget) open(n string, flags int) error {
	fd, err := unix.Open(k.path(n), flags|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func (k kernelTarget) create(n string, data []byte, mode uint32) error {
	fd, err := unix.Open(k.path(n), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, data); err != nil {
		return err
	}
	return unix.Fchmod(fd, mode) // past the umask, as the service's create is
}

func (k kernelTarget) truncate(n string, size int64) error { return unix.Truncate(k.path(n), size) }
func (k kernelTarget) chmod(n string, mode uint32) error   { return unix.Chmod(k.path(n), mode) }
func (k kernelTarget) chown(n string, uid, gid int) error  { return unix.Chown(k.path(n), uid, gid) }
func (k kernelTarget) setxattr(n, attr string, val []byte) error {
	return unix.Setxattr(k.path(n), attr, val, 0)
}

type fslibTarget struct {
	fs  libservices.FS
	sub string
}

func (f fslibTarget) path(n string) string { return f.sub + "/" + n }

func (f fslibTarget) open(n string, flags int) error {
	h, err := f.fs.Open(f.path(n), flags, 0)
	if err == nil {
		err = f.fs.Close(h)
	}
	return err
}

func (f fslibTarget) create(n string, data []byte, mode uint32) error {
	h, err := f.fs.Open(f.path(n), libservices.O_WRONLY|libservices.O_CREAT|libservices.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.fs.WriteAt(h, data, 0); err != nil {
		f.fs.Close(h)
		return err
	}
	return f.fs.Close(h)
}

func (f fslibTarget) truncate(n string, size int64) error {
	return f.fs.Setattr(f.path(n), &libservices.SetAttr{Valid: libservices.SetSize, Size: size})
}

func (f fslibTarget) chmod(n string, mode uint32) error {
	return f.fs.Setattr(f.path(n), &libservices.SetAttr{Valid: libservices.SetMode, Mode: mode})
}

func (f fslibTarget) chown(n string, uid, gid int) error {
	sa := &libservices.SetAttr{}
	if uid >= 0 {
		sa.Valid |= libservices.SetUid
		sa.Uid = uint32(uid)
	}
	if gid >= 0 {
		sa.Valid |= libservices.SetGid
		sa.Gid = uint32(gid)
	}
	return f.fs.Setattr(f.path(n), sa)
}

func (f fslibTarget) setxattr(n, attr string, val []byte) error {
	return f.fs.Setxattr(f.path(n), attr, val, 0)
}

func errnoName(err error) string {
	if err == nil {
		return "OK"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return strconv.Itoa(int(errno))
	}
	return "not an errno: " + err.Error()
}

const otherTenantUID = 4343

// The pool's user here is nobody, not poolUID: `polytropon mount` run by the
// user mounts with fusermount3, which needs the uid in the passwd database.
const escUID, escGID = 65534, 65534

var escCred = &syscall.Credential{Uid: escUID, Gid: escGID, Groups: []uint32{}}

// capabilityBlob is a valid security.capability value (VFS_CAP_REVISION_2,
// effective) granting CAP_SETUID, so that the kernel judges the caller's
// right to set it rather than the value's form.
func capabilityBlob() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_SETUID)
	return b
}

// escAttempts are in the order of the exploit the issue reports: a binary
// given to root, made setuid, given file capabilities, then run.
type escAttempt struct {
	name string
	do   func(escTarget) error
}

func escAttempts() []escAttempt {
	id, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		panic(err)
	}
	return []escAttempt{
		{"read root's 0600 file", func(t escTarget) error { return t.open("rootsecret", unix.O_RDONLY) }},
		{"open root's file for writing", func(t escTarget) error { return t.open("rootfile", unix.O_WRONLY) }},
		{"open root's file with O_TRUNC", func(t escTarget) error { return t.open("rootfile", unix.O_WRONLY|unix.O_TRUNC) }},
		{"truncate root's file", func(t escTarget) error { return t.truncate("rootfile", 0) }},
		{"chmod root's file", func(t escTarget) error { return t.chmod("rootfile", 0o666) }},
		{"chmod root's 0600 file", func(t escTarget) error { return t.chmod("rootsecret", 0o644) }},
		{"chown root's file to oneself", func(t escTarget) error { return t.chown("rootfile", os.Getuid(), os.Getgid()) }},
		{"create in root's directory", func(t escTarget) error { return t.create("rootdir/x", []byte("x"), 0o644) }},
		{"create an own file", func(t escTarget) error { return t.create("own", []byte("mine"), 0o644) }},
		{"chown an own file to root", func(t escTarget) error { return t.chown("own", 0, 0) }},
		{"chgrp an own file to root's group", func(t escTarget) error { return t.chown("own", -1, 0) }},
		{"chown an own file to another tenant", func(t escTarget) error { return t.chown("own", otherTenantUID, otherTenantUID) }},
		{"chown an own file to oneself", func(t escTarget) error { return t.chown("own", os.Getuid(), os.Getgid()) }},
		{"copy a binary", func(t escTarget) error { return t.create("idbin", id, 0o755) }},
		{"chown the binary to root", func(t escTarget) error { return t.chown("idbin", 0, 0) }},
		{"chmod the binary 04755", func(t escTarget) error { return t.chmod("idbin", 0o4755) }},
		{"set security.capability on the binary", func(t escTarget) error {
			return t.setxattr("idbin", "security.capability", capabilityBlob())
		}},
		{"set trusted.x on the binary", func(t escTarget) error { return t.setxattr("idbin", "trusted.x", []byte("x")) }},
	}
}

// escFixture gives dir what the attempts need: a directory SUB owned by the
// pool's user holding root's 0600 and 0644 files and a root directory.
func escFixture(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, escUID, escGID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"rootsecret", 0o600}, {"rootfile", 0o644}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte("root's "+f.name), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "rootdir"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// runEscalations runs the attempts as the pool's user (mode:arg of escEnv)
// and returns attempt -> result.
func runEscalations(t *testing.T, exe, mode string) map[string]string {
	t.Helper()
	out := asUser(t, escCred, []string{escEnv + "=" + mode}, exe)
	res := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		name, r, ok := strings.Cut(l, "\t")
		if !ok {
			t.Fatalf("attempts %s: %q", mode, out)
		}
		res[name] = r
	}
	if len(res) != len(escAttempts()) {
		t.Fatalf("attempts %s: %d results, want %d:\n%s", mode, len(res), len(escAttempts()), out)
	}
	return res
}

// runAsPool runs a binary as the pool's user from a shell and returns what
// `id -u` printed.
func runAsPool(t *testing.T, bin string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", bin+" -u")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: escCred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s as the pool's user: %v: %s", bin, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestEscalationsAsThePoolUser(t *testing.T) {
	testenv.FUSE(t)
	dir := tenantDir(t)
	exe := tenantExe(t, dir)
	kernelDir := filepath.Join(dir, "kernel")
	branch := filepath.Join(dir, "branch")
	fuseMnt := filepath.Join(dir, "fuse")
	userMnt := filepath.Join(dir, "usermount")
	escFixture(t, kernelDir)
	if err := os.Mkdir(branch, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(branch, escUID, escGID); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"fslib", "fuse", "mount"} {
		escFixture(t, filepath.Join(branch, sub))
	}
	for _, d := range []string{fuseMnt, userMnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(userMnt, escUID, escGID); err != nil {
		t.Fatal(err)
	}
	e := newServeEnvWith(t, "", fmt.Sprintf(`    filesystems:
      - name: data
        fuse_mounts: [{path: %s, allow_other: true}]
        stack: [{passthrough: {dir: %s}}]
`, fuseMnt, branch))
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), fmt.Sprintf("uid: %d\n    gid: %d\n", poolUID, poolGID), fmt.Sprintf("uid: %d\n    gid: %d\n", escUID, escGID), 1))
	if err := os.WriteFile(e.cfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	serve := startServe(t, e)
	defer stopServe(t, e, serve)

	// `polytropon mount` run by the pool's user: its own FUSE mount
	// (fusermount3) over the direct path.
	userCanOpenFUSE(t)
	mount := exec.Command(exe, "mount", "--fs", "data", "--socket", e.socket(), userMnt)
	mount.SysProcAttr = &syscall.SysProcAttr{Credential: escCred}
	var mountErr lockedBuffer
	mount.Stderr = &mountErr
	mout, err := mount.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mount.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = mount.Process.Signal(syscall.SIGTERM)
		if err := mount.Wait(); err != nil {
			t.Errorf("polytropon mount after SIGTERM: %v\n%s", err, mountErr.String())
		}
	}()
	if l, err := bufio.NewReader(mout).ReadString('\n'); !strings.HasPrefix(l, "mounted data at ") {
		t.Fatalf("polytropon mount as the pool's user: %q %v\n%s", l, err, mountErr.String())
	}

	kernel := runEscalations(t, exe, "kernel:"+kernelDir)
	paths := []struct {
		name, short, mode string
		bins              []string // where the binary made through this path can be run
	}{
		{"fslib", "fslib", "fslib:" + e.socket() + ":/fslib", []string{filepath.Join(branch, "fslib", "idbin")}},
		{"the service's FUSE mount", "fuse", "kernel:" + filepath.Join(fuseMnt, "fuse"),
			[]string{filepath.Join(fuseMnt, "fuse", "idbin"), filepath.Join(branch, "fuse", "idbin")}},
		{"polytropon mount", "mount", "kernel:" + filepath.Join(userMnt, "mount"),
			[]string{filepath.Join(userMnt, "mount", "idbin"), filepath.Join(branch, "mount", "idbin")}},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-40s %-8s", "attempt", "kernel")
	for _, p := range paths {
		fmt.Fprintf(&table, " %-10s", p.short)
	}
	results := make([]map[string]string, len(paths))
	for i, p := range paths {
		results[i] = runEscalations(t, exe, p.mode)
	}
	for _, a := range escAttempts() {
		fmt.Fprintf(&table, "\n%-40s %-8s", a.name, kernel[a.name])
		for i, p := range paths {
			got := results[i][a.name]
			fmt.Fprintf(&table, " %-10s", got)
			if got != kernel[a.name] {
				t.Errorf("%s through %s: %s, the kernel gives the same user %s", a.name, p.name, got, kernel[a.name])
			}
		}
	}
	t.Logf("as uid %d:\n%s", escUID, table.String())
	// The attempts the kernel refuses are refused, so the test would see a
	// path that lets them through.
	for _, a := range []string{"read root's 0600 file", "truncate root's file", "chown an own file to root",
		"chown an own file to another tenant", "set security.capability on the binary"} {
		if kernel[a] == "OK" {
			t.Errorf("the kernel let the pool's user %s: the comparison proves nothing", a)
		}
	}

	// The setuid binary runs as its owner, the pool's user, never as root:
	// run from a shell on the host (the branch) and through each mount.
	want := strconv.Itoa(escUID)
	if got := runAsPool(t, filepath.Join(kernelDir, "idbin")); got != want {
		t.Errorf("the kernel's own setuid binary gives uid %s", got)
	}
	for _, p := range paths {
		for _, b := range p.bins {
			if got := runAsPool(t, b); got != want {
				t.Errorf("the binary made through %s, run as %s: uid %s, want %s", p.name, b, got, want)
			}
		}
	}
	for _, sub := range []string{"fslib", "fuse", "mount"} {
		var st, kst unix.Stat_t
		if err := unix.Stat(filepath.Join(branch, sub, "idbin"), &st); err != nil {
			t.Fatal(err)
		}
		if err := unix.Stat(filepath.Join(kernelDir, "idbin"), &kst); err != nil {
			t.Fatal(err)
		}
		if st.Uid != escUID || st.Gid != escGID || st.Mode != kst.Mode {
			t.Errorf("the binary made through %s is %d:%d mode %o; the kernel's is %d:%d %o", sub, st.Uid, st.Gid, st.Mode, kst.Uid, kst.Gid, kst.Mode)
		}
		if _, err := unix.Getxattr(filepath.Join(branch, sub, "idbin"), "security.capability", make([]byte, 64)); !errors.Is(err, unix.ENODATA) {
			t.Errorf("the binary made through %s has security.capability (%v)", sub, err)
		}
	}
}

// userCanOpenFUSE makes /dev/fuse usable by every user for the test, as
// libfuse's udev rule makes it (0666) on distributions: fusermount3 opens it
// with the calling user's rights, and a host without that rule (a VM whose
// devtmpfs made it root's alone) would fail the user's mount for a reason
// that has nothing to do with polytropon. The mode is put back afterwards.
func userCanOpenFUSE(t *testing.T) {
	t.Helper()
	st, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() == 0o666 {
		return
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Chmod("/dev/fuse", st.Mode().Perm()); err != nil {
			t.Errorf("restoring /dev/fuse's mode: %v", err)
		}
	})
}
