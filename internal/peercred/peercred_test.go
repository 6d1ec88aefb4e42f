package peercred

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseStatus(t *testing.T) {
	good := "Name:\tx\nUid:\t1\t2\t3\t2\nGid:\t5\t6\t7\t6\nGroups:\t10 20 \nCapEff:\t000001ffffffffff\n"
	s, err := parseStatus([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.uids != [4]uint32{1, 2, 3, 2} || s.gids != [4]uint32{5, 6, 7, 6} || !slices.Equal(s.groups, []uint32{10, 20}) || s.capEff != 0x1ffffffffff {
		t.Fatalf("parsed %+v", s)
	}
	if !s.same(2, 6) || s.same(2, 7) || s.same(1, 6) {
		t.Fatal("same() compares effective and filesystem ids only")
	}
	for _, bad := range []string{
		"Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t\n",                       // no CapEff
		"Uid:\t1\t2\t3\nGid:\t5\t6\t7\t8\nGroups:\t\nCapEff:\t0\n",              // short Uid
		"Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\tx\nCapEff:\t0\n",          // bad group
		"Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t\nCapEff:\tzz\n",          // bad caps
		"Gid:\t5\t6\t7\t8\nGid:\t5\t6\t7\t8\nGroups:\t\nCapEff:\t0\n",           // no Uid
		"Uid:\t1\t2\t3\t99999999999\nGid:\t5\t6\t7\t8\nGroups:\t\nCapEff:\t0\n", // overflow
	} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func myCaps(t *testing.T) uint64 {
	t.Helper()
	s, err := readStatus(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	return s.capEff
}

func TestFromSocketSelf(t *testing.T) {
	a, _ := socketPair(t)
	c, err := FromSocket(a)
	if err != nil {
		t.Fatal(err)
	}
	groups, _ := unix.Getgroups()
	want := make([]uint32, len(groups))
	for i, g := range groups {
		want[i] = uint32(g)
	}
	slices.Sort(want)
	got := slices.Clone(c.Groups)
	slices.Sort(got)
	if c.PID != int32(os.Getpid()) || c.UID != uint32(os.Geteuid()) || c.GID != uint32(os.Getegid()) || !slices.Equal(got, want) {
		t.Fatalf("cred %+v, want pid %d uid %d gid %d groups %v", c, os.Getpid(), os.Geteuid(), os.Getegid(), want)
	}
	if c.Caps != myCaps(t) {
		t.Fatalf("caps %#x, want %#x", c.Caps, myCaps(t))
	}
}

func TestFromPID(t *testing.T) {
	pid := int32(os.Getpid())
	c := FromPID(pid, uint32(os.Geteuid()), uint32(os.Getegid()))
	if c.Caps != myCaps(t) || c.UID != uint32(os.Geteuid()) {
		t.Fatalf("self: %+v", c)
	}
	// A header that does not match the process's identity: no groups, no caps.
	c = FromPID(pid, uint32(os.Geteuid())+1, uint32(os.Getegid()))
	if c.Caps != 0 || len(c.Groups) != 0 || c.UID != uint32(os.Geteuid())+1 {
		t.Fatalf("mismatched identity lent its credentials: %+v", c)
	}
	// A process that is gone.
	cmd := exec(t)
	c = FromPID(int32(cmd), 0, 0)
	if c.Caps != 0 || len(c.Groups) != 0 {
		t.Fatalf("dead process lent its credentials: %+v", c)
	}
	if c := FromPID(0, 7, 8); c.UID != 7 || c.GID != 8 || c.Caps != 0 {
		t.Fatalf("pid 0: %+v", c)
	}
}

// exec runs and reaps a short-lived child and returns its (now free) pid.
func exec(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return p.Pid
}

func BenchmarkFromSocket(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	for b.Loop() {
		if _, err := FromSocket(fds[0]); err != nil {
			b.Fatal(err)
		}
	}
}
