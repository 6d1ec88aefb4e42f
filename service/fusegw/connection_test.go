package fusegw

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/libservices/memfs"
)

// connEnv=MOUNTPOINT:DEV makes the test binary serve the connection it
// inherits as fd 3 (ServeConnection), as a pool's service does: it says
// ready, and on "stop" from stdin unmounts, which writes "detach" and waits
// for "detached" on stdin, then waits for the server to end and says "done".
const connEnv = "POLYTROPON_FUSEGW_TEST_CONN"

func init() {
	v := os.Getenv(connEnv)
	if v == "" {
		return
	}
	os.Exit(helperConn(v))
}

func helperConn(v string) int {
	mp, dev, _ := strings.Cut(v, "\n")
	fsys := memfs.New(memfs.Options{})
	if err := writeFS(fsys, "hello", []byte("served by uid "+fmt.Sprint(os.Getuid()))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	in := bufio.NewReader(os.Stdin)
	detach := func() error {
		fmt.Println("detach")
		if l, err := in.ReadString('\n'); l != "detached\n" {
			return fmt.Errorf("mounter: %q %v", l, err)
		}
		return nil
	}
	s, err := ServeConnection(3, mp, dev, fsys, Options{}, detach)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(readyLine)
	if l, err := in.ReadString('\n'); l != "stop\n" {
		fmt.Fprintln(os.Stderr, "helper:", l, err)
		return 1
	}
	if err := s.Unmount(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.Wait()
	fmt.Println("done")
	return 0
}

// TestConnectionServedByAnotherUser: root mounts a connection for a user
// (MountConnection) and a process of that user with no privilege serves it
// (ServeConnection): the user reads through the mount, root does not (no
// allow_other: the mount is the user's), mountinfo names the user, and the
// server's Unmount reaches the mounter, after which the server ends.
func TestConnectionServedByAnotherUser(t *testing.T) {
	needFUSE(t)
	const uid, gid = 4261, 4262
	dir, err := os.MkdirTemp("", "fusegw-conn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "helper")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}

	c, err := MountConnection(mp, ConnOptions{Name: "conn-test", UID: uid, GID: gid})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Detach() })
	if _, err := MountConnection(mp, ConnOptions{UID: uid, GID: gid}); !errors.Is(err, ErrMounted) {
		t.Errorf("a second connection on the same mount point: %v, want ErrMounted", err)
	}
	srv := exec.Command(exe, "-test.run=^$")
	srv.Env = append(os.Environ(), connEnv+"="+c.Mountpoint+"\n"+c.Dev)
	srv.ExtraFiles = []*os.File{c.File}
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	srv.Stderr = os.Stderr
	stdin, err := srv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	// Our copy goes, or the connection would outlive the server.
	c.File.Close()
	out := bufio.NewReader(stdout)
	if l, err := out.ReadString('\n'); l != readyLine+"\n" {
		t.Fatalf("server: %q %v", l, err)
	}

	cat := exec.Command("cat", filepath.Join(mp, "hello"))
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	if b, err := cat.CombinedOutput(); err != nil || string(b) != fmt.Sprintf("served by uid %d", uid) {
		t.Errorf("the user reads through its mount: %q %v", b, err)
	}
	if _, err := os.ReadFile(filepath.Join(mp, "hello")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("root through the user's mount without allow_other: %v, want EACCES", err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if !strings.Contains(string(mi), fmt.Sprintf("user_id=%d,group_id=%d", uid, gid)) {
		t.Errorf("mountinfo does not give the mount to %d:%d:\n%s", uid, gid, mi)
	}

	fmt.Fprintln(stdin, "stop")
	if l, err := out.ReadString('\n'); l != "detach\n" {
		t.Fatalf("server's unmount: %q %v", l, err)
	}
	if err := c.Detach(); err != nil {
		t.Fatal(err)
	}
	if ms, err := mountsAt(c.Mountpoint); err != nil || len(ms) != 0 {
		t.Fatalf("after Detach: %v %v", ms, err)
	}
	fmt.Fprintln(stdin, "detached")
	if l, err := out.ReadString('\n'); l != "done\n" {
		t.Fatalf("server after the detach: %q %v", l, err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Detach(); err != nil {
		t.Errorf("second Detach: %v", err)
	}
}
