package peercred_test

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/asuser"
	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/internal/testenv"
)

// TestFromPIDThread: a FUSE request names its caller by thread id; a thread
// that switched to another identity is read as that identity, with its own
// groups and no capabilities, through a pidfd of the thread.
func TestFromPIDThread(t *testing.T) {
	testenv.Root(t)
	th, err := asuser.Start(peercred.Cred{UID: 4040, GID: 4141, Groups: []uint32{4242, 4343}})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var tid int
	th.Do(func() { tid = unix.Gettid() })
	if tid == os.Getpid() {
		t.Fatal("asuser switched the main thread")
	}
	c := peercred.FromPID(int32(tid), 4040, 4141)
	slices.Sort(c.Groups)
	if !slices.Equal(c.Groups, []uint32{4242, 4343}) || c.Caps != 0 {
		t.Fatalf("thread %d: %+v, want groups [4242 4343] and no capabilities", tid, c)
	}
	fd, err := peercred.PidfdOpen(int32(tid))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if !peercred.Alive(fd) {
		t.Fatal("a running thread is not alive")
	}
	// The process itself is read as itself, whatever its threads do.
	if c := peercred.FromPID(int32(os.Getpid()), 0, 0); c.Caps == 0 {
		t.Fatalf("the root test process read without capabilities: %+v", c)
	}
}

// TestFromSocketOtherIdentity connects from a thread that switched to another
// uid, gid and groups (the process stays root): the identity is the thread's,
// and the capabilities are none, because /proc shows the process as root.
func TestFromSocketOtherIdentity(t *testing.T) {
	testenv.Root(t)
	// Not t.TempDir: its parent is 0700, closed to the other uid.
	dir, err := os.MkdirTemp("", "peercred")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := dir + "/s"
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	os.Chmod(path, 0o777)
	th, err := asuser.Start(peercred.Cred{UID: 4040, GID: 4141, Groups: []uint32{4242, 4343}})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	th.Do(func() { err = unix.Connect(s, &unix.SockaddrUnix{Name: path}) })
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn)
	c, err := peercred.FromSocket(conn)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(c.Groups)
	if c.UID != 4040 || c.GID != 4141 || !slices.Equal(c.Groups, []uint32{4242, 4343}) || c.Caps != 0 {
		t.Fatalf("cred %+v, want uid 4040 gid 4141 groups [4242 4343] caps 0", c)
	}
}

// TestFromPIDUnprivilegedReader: a service runs as its tenant's uid and may not
// signal a root caller; that must not make the caller look gone and cost it
// its capabilities (signal 0 then answers EPERM, not ESRCH). The caller is
// another process: signals within one thread group are always allowed.
func TestFromPIDUnprivilegedReader(t *testing.T) {
	testenv.Root(t)
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	pid := int32(child.Process.Pid)
	var want peercred.Cred
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		// Until it has exec'd, the child is this test process's copy.
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) == "sleep\n" {
			want = peercred.FromPID(pid, 0, 0)
			break
		}
	}
	if want.Caps == 0 {
		t.Fatal("the root child has no capabilities")
	}
	th, err := asuser.Start(peercred.Cred{UID: 4040, GID: 4141})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var got peercred.Cred
	th.Do(func() { got = peercred.FromPID(pid, 0, 0) })
	if got.Caps != want.Caps {
		t.Fatalf("root process read by uid 4040: caps %#x, want %#x", got.Caps, want.Caps)
	}
}
