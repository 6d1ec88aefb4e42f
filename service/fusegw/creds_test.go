package fusegw

import (
	"errors"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/asuser"
	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices/memfs"
)

func header(pid int, uid, gid uint32) *fuse.InHeader {
	return &fuse.InHeader{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: gid}, Pid: uint32(pid)}}
}

// TestCredCache: a caller's groups come from its thread, are reused while the
// thread lives (for credTTL), and never outlive it.
func TestCredCache(t *testing.T) {
	testenv.Root(t)
	cc := newCredCache()
	defer cc.close()
	want := peercred.Cred{UID: 4040, GID: 4141, Groups: []uint32{4141, 4242}}
	th, err := asuser.Start(want)
	if err != nil {
		t.Fatal(err)
	}
	var tid int
	th.Do(func() { tid = unix.Gettid() })
	h := header(tid, want.UID, want.GID)
	c := cc.get(h)
	if c.UID != want.UID || c.GID != want.GID || !slices.Equal(c.Groups, want.Groups) || c.Caps != 0 {
		t.Fatalf("cred %+v, want %+v", *c, want)
	}
	if again := cc.get(h); again != c {
		t.Fatal("a live caller's credentials were read again within credTTL")
	}
	// Another identity in the header: not the thread's, so groups from nowhere.
	if o := cc.get(header(tid, 7, 7)); o.UID != 7 || len(o.Groups) != 0 {
		t.Fatalf("mismatched header lent the thread's groups: %+v", *o)
	}
	// However long the entry would otherwise live, the thread's end ends it.
	cc.mu.Lock()
	cc.entries[credKey{pid: uint32(tid), uid: want.UID, gid: want.GID}.slot()].expires = credClock() + int64(time.Hour)
	cc.mu.Unlock()
	pidfd, err := peercred.PidfdOpen(int32(tid))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	th.Close()
	deadline := time.Now().Add(10 * time.Second)
	for peercred.Alive(pidfd) { // the runtime ends the locked thread asynchronously
		if time.Now().After(deadline) {
			t.Fatal("the thread did not end")
		}
		time.Sleep(time.Millisecond)
	}
	if c := cc.get(h); len(c.Groups) != 0 || c.UID != want.UID {
		t.Fatalf("a dead thread still lends its credentials: %+v", *c)
	}
	if c := cc.get(header(0, 5, 6)); c.UID != 5 || c.GID != 6 || len(c.Groups) != 0 || c.Caps != 0 {
		t.Fatalf("a kernel request (pid 0): %+v", *c)
	}
}

// TestCredCacheExpires: a live thread's changed groups are seen after credTTL.
func TestCredCacheExpires(t *testing.T) {
	testenv.Root(t)
	cc := newCredCache()
	defer cc.close()
	th, err := asuser.Start(peercred.Cred{UID: 0, GID: 0, Caps: 1 << peercred.CapChown})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var pid int
	th.Do(func() { pid = unix.Gettid() })
	c := cc.get(header(pid, 0, 0))
	if c.Caps != 1<<peercred.CapChown {
		t.Fatalf("a root thread with CAP_CHOWN: %+v", *c)
	}
	i := credKey{pid: uint32(pid)}.slot()
	cc.mu.Lock()
	cc.entries[i].expires = credClock() - 1
	cc.mu.Unlock()
	if c2 := cc.get(header(pid, 0, 0)); c2 == c {
		t.Fatal("an expired entry was used")
	}
}

// countQuota counts handles per uid, with a limit.
type countQuota struct {
	mu    sync.Mutex
	held  map[uint32]int
	limit int
	calls int
}

func (q *countQuota) Acquire(uid uint32) syscall.Errno {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls++
	if q.held[uid] >= q.limit {
		return syscall.EMFILE
	}
	q.held[uid]++
	return 0
}

func (q *countQuota) Release(uid uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held[uid] <= 0 {
		panic("release without acquire")
	}
	q.held[uid]--
}

func (q *countQuota) heldBy(uid uint32) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held[uid]
}

// TestQuota: every handle the gateway opens is counted for its caller's uid,
// an open over the quota fails with its errno, and every handle is given back,
// at close and at unmount.
func TestQuota(t *testing.T) {
	needFUSE(t)
	q := &countQuota{held: map[uint32]int{}, limit: 3}
	s := mountOn(t, memfs.New(memfs.Options{}), Options{Quota: q})
	mp := s.Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mp+"/d", 0o755); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, q, 0, 0) // the write's handle, released asynchronously
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		name := mp + "/f"
		if i == 2 {
			name = mp + "/d"
		}
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if n := q.heldBy(0); n != 3 {
		t.Fatalf("root holds %d handles, want 3", n)
	}
	if _, err := os.Open(mp + "/f"); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("open over the quota: %v, want EMFILE", err)
	}
	if _, err := os.Create(mp + "/g"); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("create over the quota: %v, want EMFILE", err)
	}
	files[0].Close()
	waitHeld(t, q, 0, 2) // RELEASE is asynchronous
	f, err := os.Create(mp + "/g")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files[1:], f)
	if err := s.Unmount(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	s.Wait()
	if n := q.heldBy(0); n != 0 {
		t.Fatalf("%d handles still counted after unmount", n)
	}
}

func waitHeld(t *testing.T, q *countQuota, uid uint32, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for q.heldBy(uid) != want {
		if time.Now().After(deadline) {
			t.Fatalf("uid %d holds %d handles, want %d", uid, q.heldBy(uid), want)
		}
		time.Sleep(time.Millisecond)
	}
}
