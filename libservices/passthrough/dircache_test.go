package passthrough

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/polytropon/polytropon/libservices"
)

// cachedFS is a passthrough on a scratch directory with a directory cache of
// size entries whose clock stands still until the test moves it (clk, in
// nanoseconds), counting its system calls into calls.
type cachedFS struct {
	*FS
	dir   string
	calls *Syscalls
	clk   *atomic.Int64
}

func newCached(t *testing.T, dir string, size int, ttl time.Duration) *cachedFS {
	t.Helper()
	calls := new(Syscalls)
	iv := libservices.Duration(ttl)
	f, err := New(Options{Dir: dir, DirCacheSize: size, DirRevalidate: &iv, Syscalls: calls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.CloseFS() })
	clk := new(atomic.Int64)
	f.clock = clk.Load
	return &cachedFS{FS: f, dir: dir, calls: calls, clk: clk}
}

// cached reports whether dir has a fresh entry holding a descriptor.
func (c *cachedFS) cached(dir string) bool {
	e := c.dc.get(dir, c.clk.Load())
	if e == nil {
		return false
	}
	c.dc.release(e)
	return e.fd >= 0
}

func mustMkdirAll(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own
}

// TestSyscallCounts pins the system calls of each operation on a name two
// directories down, with the directory cache (after the first use) and with
// every use resolved from the root (dir_revalidate 0: the cost before the
// cache). Run it with -v to print the table.
func TestSyscallCounts(t *testing.T) {
	// A mode the umask does not mask: no chmod after a create.
	mode := 0o644 &^ umask
	type op struct {
		name        string
		cached, old int64
		fn          func(f libservices.FS) error
	}
	ops := []op{
		{"lstat d/e/f", 1, 3, func(f libservices.FS) error { var a libservices.Attr; return f.Lstat("d/e/f", &a) }},
		{"lstat top", 1, 1, func(f libservices.FS) error { var a libservices.Attr; return f.Lstat("top", &a) }},
		{"stat d/e/f", 1, 3, func(f libservices.FS) error { var a libservices.Attr; return f.Stat("d/e/f", &a) }},
		{"open+close d/e/f", 2, 2, func(f libservices.FS) error {
			h, err := f.Open("d/e/f", libservices.O_RDONLY, 0)
			if err != nil {
				return err
			}
			return f.Close(h)
		}},
		{"create+close+unlink d/e/n", 4, 6, func(f libservices.FS) error {
			h, err := f.Open("d/e/n", libservices.O_CREAT|libservices.O_WRONLY, mode)
			if err != nil {
				return err
			}
			if err := f.Close(h); err != nil {
				return err
			}
			return f.Unlink("d/e/n")
		}},
		{"create excl+close+unlink d/e/n", 3, 5, func(f libservices.FS) error {
			h, err := f.Open("d/e/n", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, mode)
			if err != nil {
				return err
			}
			if err := f.Close(h); err != nil {
				return err
			}
			return f.Unlink("d/e/n")
		}},
		{"mkdir+rmdir d/e/x", 2, 6, func(f libservices.FS) error {
			if err := f.Mkdir("d/e/x", mode|0o100); err != nil {
				return err
			}
			return f.Rmdir("d/e/x")
		}},
		{"rename d/e/f d/e/g, back", 2, 10, func(f libservices.FS) error {
			if err := f.Rename("d/e/f", "d/e/g"); err != nil {
				return err
			}
			return f.Rename("d/e/g", "d/e/f")
		}},
		{"readlink d/e/l", 1, 3, func(f libservices.FS) error { _, err := f.Readlink("d/e/l"); return err }},
		// Through a symlink: a marker sends it to the full resolution, at the
		// cost from before the cache.
		{"lstat s/f, s -> /d/e", 3, 3, func(f libservices.FS) error { var a libservices.Attr; return f.Lstat("s/f", &a) }},
		{"readdir d/e", 4, 4, func(f libservices.FS) error { _, err := f.ReadDir("d/e"); return err }},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-32s %8s %8s\n", "operation", "no cache", "cached")
	for _, o := range ops {
		var got [2]int64
		var detail [2]string
		for i, ttl := range []time.Duration{0, time.Minute} {
			dir := hostDir(t, "/dev/shm")
			mustMkdirAll(t, dir+"/d/e")
			mustWrite(t, dir+"/d/e/f", "data")
			mustWrite(t, dir+"/top", "data")
			if err := os.Symlink("f", dir+"/d/e/l"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/d/e", dir+"/s"); err != nil {
				t.Fatal(err)
			}
			f := newCached(t, dir, 16, ttl)
			if err := o.fn(f); err != nil { // the first use fills the cache
				t.Fatalf("%s: %v", o.name, err)
			}
			f.calls.Reset()
			if err := o.fn(f); err != nil {
				t.Fatalf("%s: %v", o.name, err)
			}
			got[i], detail[i] = f.calls.Total(), f.calls.String()
		}
		if got[0] != o.old || got[1] != o.cached {
			t.Errorf("%s: %d system calls from the root (%s), %d cached (%s); want %d and %d",
				o.name, got[0], detail[0], got[1], detail[1], o.old, o.cached)
		}
		fmt.Fprintf(&table, "%-32s %8d %8d   %s\n", o.name, got[0], got[1], detail[1])
	}
	t.Logf("system calls per operation:\n%s", table.String())
}

// TestDirCacheSymlinks checks the symlinks met relative to a cached directory:
// in the final component and in the middle of a path, absolute and relative,
// aimed inside the branch (resolved in the branch root, like RESOLVE_IN_ROOT)
// and outside it (never reached).
func TestDirCacheSymlinks(t *testing.T) {
	outer := hostDir(t, "/dev/shm")
	branch := outer + "/branch"
	mustMkdirAll(t, branch+"/d", branch+"/real", outer+"/outdir")
	mustWrite(t, outer+"/secret", "secret")
	mustWrite(t, outer+"/outdir/f", "outside")
	mustWrite(t, branch+"/secret", "inside")
	mustWrite(t, branch+"/real/f", "real")
	for name, target := range map[string]string{
		"abs": outer + "/secret", "rel": "../../secret", "up": "..", "root": "/",
		"inabs": "/secret", "dirabs": "/real", "dirrel": "../real", "outdir": outer + "/outdir",
		"magic": "/proc/self/root" + outer + "/secret",
	} {
		if err := os.Symlink(target, branch+"/d/"+name); err != nil {
			t.Fatal(err)
		}
	}
	f := newCached(t, branch, 16, time.Minute)
	var a libservices.Attr
	if err := f.Lstat("d/abs", &a); err != nil || !f.cached("d") {
		t.Fatalf("lstat d/abs: %v, d cached %v", err, f.cached("d"))
	}
	read := func(p string) (string, error) {
		h, err := f.Open(p, libservices.O_RDONLY, 0)
		if err != nil {
			return "", err
		}
		defer f.Close(h)
		buf := make([]byte, 64)
		n, err := f.ReadAt(h, buf, 0)
		return string(buf[:n]), err
	}
	for _, tc := range []struct {
		path, want string // want "" for ENOENT
	}{
		{"d/abs", ""}, {"d/rel", "inside"}, {"d/up/secret", "inside"}, {"d/root/secret", "inside"},
		{"d/inabs", "inside"}, {"d/dirabs/f", "real"}, {"d/dirrel/f", "real"}, {"d/outdir/f", ""},
		{"d/magic", ""}, // /proc is the branch's: there is none
	} {
		// Twice: the second time through whatever the first one cached.
		for i := 0; i < 2; i++ {
			got, err := read(tc.path)
			switch {
			case tc.want == "" && err == unix.ENOENT:
			case err == nil && got == tc.want:
			default:
				t.Errorf("read %s (try %d): %q %v, want %q", tc.path, i, got, err, tc.want)
			}
			serr := f.Stat(tc.path, &a)
			if (tc.want == "") != (serr == unix.ENOENT) {
				t.Errorf("stat %s (try %d): %v", tc.path, i, serr)
			}
			if tc.want != "" {
				continue
			}
			if h, err := f.Open(tc.path, libservices.O_RDWR|libservices.O_TRUNC, 0); err == nil {
				f.Close(h)
				t.Errorf("open %s for writing succeeded", tc.path)
			}
			if err := f.Setattr(tc.path, &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o777}); err == nil {
				t.Errorf("chmod %s succeeded", tc.path)
			}
		}
	}
	// A path through a symlink is never a key: d/dirabs names real, which
	// only "real" may key.
	if f.cached("d/dirabs") || f.cached("d/up") || f.cached("d/outdir") {
		t.Errorf("a path through a symlink was cached")
	}
	if err := f.Mkdir("d/outdir/escaped", 0o755); err != unix.ENOENT {
		t.Errorf("mkdir through a symlink out of the branch: %v, want ENOENT", err)
	}
	if err := f.Mkdir("d/up/made", 0o755); err != nil {
		t.Errorf("mkdir through a symlink to ..: %v (it resolves to the branch root)", err)
	}
	if _, err := os.Stat(outer + "/made"); err == nil {
		t.Errorf("mkdir escaped the branch")
	}
	for p, want := range map[string]string{outer + "/secret": "secret", outer + "/outdir/f": "outside"} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s changed: %q %v", p, b, err)
		}
	}
	if ents, _ := os.ReadDir(outer + "/outdir"); len(ents) != 1 {
		t.Errorf("outdir has %d entries, want 1", len(ents))
	}
}

// TestDirCacheHostMovesOut moves a cached directory out of the branch behind
// the FS's back: after the revalidation bound, its old path is ENOENT and
// nothing outside the branch is reached; a directory the host makes at the
// old path is the one seen.
func TestDirCacheHostMovesOut(t *testing.T) {
	outer := hostDir(t, "/dev/shm")
	branch := outer + "/branch"
	mustMkdirAll(t, branch+"/a/b")
	mustWrite(t, branch+"/a/b/f", "in")
	f := newCached(t, branch, 16, time.Second)
	var a libservices.Attr
	if err := f.Lstat("a/b/f", &a); err != nil || !f.cached("a/b") {
		t.Fatalf("lstat a/b/f: %v, cached %v", err, f.cached("a/b"))
	}
	if err := os.Rename(branch+"/a/b", outer+"/moved"); err != nil {
		t.Fatal(err)
	}
	// Within the bound the cached descriptor still names the moved directory
	// (the package doc says why that is safe); after it, the path is resolved
	// from the root again.
	f.clk.Add(int64(time.Second))
	if err := f.Lstat("a/b/f", &a); err != unix.ENOENT {
		t.Errorf("lstat a/b/f after the host moved a/b out: %v, want ENOENT", err)
	}
	if _, err := f.Open("a/b/g", libservices.O_CREAT|libservices.O_WRONLY, 0o644); err != unix.ENOENT {
		t.Errorf("create a/b/g after the host moved a/b out: %v, want ENOENT", err)
	}
	if err := f.Unlink("a/b/f"); err != unix.ENOENT {
		t.Errorf("unlink a/b/f: %v, want ENOENT", err)
	}
	if err := f.Setattr("a/b/f", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}); err != unix.ENOENT {
		t.Errorf("chmod a/b/f: %v, want ENOENT", err)
	}
	if _, err := os.Stat(outer + "/moved/g"); err == nil {
		t.Errorf("a file was created in the directory moved out of the branch")
	}
	if b, err := os.ReadFile(outer + "/moved/f"); err != nil || string(b) != "in" {
		t.Errorf("the moved directory's file: %q %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(outer+"/moved/f", &st); err != nil || st.Mode&0o777 != 0o644 {
		t.Errorf("the moved directory's file changed mode: %#o %v", st.Mode, err)
	}

	// The host puts a new directory at the old path: seen after the bound.
	mustMkdirAll(t, branch+"/a/b")
	mustWrite(t, branch+"/a/b/new", "new")
	f.clk.Add(int64(time.Second))
	if err := f.Lstat("a/b/new", &a); err != nil {
		t.Errorf("lstat a/b/new in the host's new a/b: %v", err)
	}
}

// TestDirCacheHostRename renames a cached directory inside the branch behind
// the FS's back: after the bound the old path is ENOENT, the new one works.
func TestDirCacheHostRename(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	mustMkdirAll(t, dir+"/x/y")
	mustWrite(t, dir+"/x/y/f", "f")
	f := newCached(t, dir, 16, 50*time.Millisecond)
	f.clock = func() int64 { return int64(time.Since(epoch)) } // real time: the bound as configured
	var a libservices.Attr
	if err := f.Lstat("x/y/f", &a); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+"/x", dir+"/z"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // past the bound: nothing can make this early
	if err := f.Lstat("x/y/f", &a); err != unix.ENOENT {
		t.Errorf("lstat of the old path after the bound: %v, want ENOENT", err)
	}
	if err := f.Lstat("z/y/f", &a); err != nil {
		t.Errorf("lstat of the new path: %v", err)
	}
}

// TestDirCacheOwnChanges checks that the FS's own renames and removals drop
// what they change at once, without waiting for the bound (the clock stands
// still).
func TestDirCacheOwnChanges(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	mustMkdirAll(t, dir+"/a/b/c", dir+"/n", dir+"/m/s", dir+"/x/y", dir+"/p/q")
	mustWrite(t, dir+"/a/b/c/f", "f")
	mustWrite(t, dir+"/m/s/g", "g")
	f := newCached(t, dir, 16, time.Minute)
	var a libservices.Attr
	for _, p := range []string{"a/b/c/f", "a/b/c", "n/none", "m/s/g", "x/y/none", "p/q/none"} {
		f.Lstat(p, &a)
	}
	for _, k := range []string{"a/b/c", "a/b", "n", "m/s", "x/y", "p/q"} {
		if !f.cached(k) {
			t.Fatalf("%s not cached", k)
		}
	}
	// Rename a directory: the entries of it and below go.
	if err := f.Rename("a", "z"); err != nil {
		t.Fatal(err)
	}
	if f.cached("a/b") || f.cached("a/b/c") {
		t.Errorf("entries below a renamed directory stayed")
	}
	if err := f.Lstat("a/b/c/f", &a); err != unix.ENOENT {
		t.Errorf("lstat a/b/c/f after rename a z: %v, want ENOENT", err)
	}
	if err := f.Lstat("z/b/c/f", &a); err != nil {
		t.Errorf("lstat z/b/c/f: %v", err)
	}
	// Rename onto an empty directory that was cached: the new name is the
	// moved directory at once.
	if err := f.Rename("m/s", "n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Lstat("n/g", &a); err != nil {
		t.Errorf("lstat n/g after rename m/s n: %v", err)
	}
	// Rmdir, then the host makes a new directory at the same path: seen at once.
	if err := f.Rmdir("x/y"); err != nil {
		t.Fatal(err)
	}
	if f.cached("x/y") {
		t.Errorf("a removed directory stayed cached")
	}
	mustMkdirAll(t, dir+"/x/y")
	mustWrite(t, dir+"/x/y/h", "h")
	if err := f.Lstat("x/y/h", &a); err != nil {
		t.Errorf("lstat x/y/h in a new x/y after own rmdir: %v", err)
	}
	// A change of mode drops what lies below (search permission), not more.
	f.Lstat("z/b/c/f", &a)
	if err := f.Setattr("p", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o700}); err != nil {
		t.Fatal(err)
	}
	if f.cached("p/q") {
		t.Errorf("an entry below a chmod'ed directory stayed")
	}
	if !f.cached("z/b/c") {
		t.Errorf("chmod of p dropped z/b/c")
	}
	checkTrees(t, f.dc)
}

// TestDirCacheEviction fills a cache of 3 and checks the bound, the order
// (least recently used out) and that evicted descriptors are closed.
func TestDirCacheEviction(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	for i := 0; i < 8; i++ {
		mustMkdirAll(t, fmt.Sprintf("%s/d%d", dir, i))
	}
	f := newCached(t, dir, 3, time.Minute)
	base := openFDs(t)
	var a libservices.Attr
	touch := func(i int) { f.Lstat(fmt.Sprintf("d%d/x", i), &a) }
	touch(0)
	touch(1)
	touch(2)
	touch(0) // d0 is now the most recently used: d1 goes first
	touch(3)
	if f.dc.len() != 3 || !f.cached("d0") || f.cached("d1") || !f.cached("d2") || !f.cached("d3") {
		t.Errorf("after d0 d1 d2 d0 d3: %d entries, d0 %v d1 %v d2 %v d3 %v; want d0 d2 d3",
			f.dc.len(), f.cached("d0"), f.cached("d1"), f.cached("d2"), f.cached("d3"))
	}
	for i := 0; i < 8; i++ {
		touch(i)
	}
	if n := openFDs(t) - base; n != 3 {
		t.Errorf("%d descriptors open beyond the root after 8 directories, want the bound 3", n)
	}
	checkTrees(t, f.dc)
	if got := f.ReservedFDs(); got != 4 {
		t.Errorf("ReservedFDs %d, want 4", got)
	}
	f.CloseFS()
	if n := openFDs(t) - base; n != -1 {
		t.Errorf("%d descriptors open after CloseFS, want -1 (the root closed)", n)
	}
}

// TestDirCacheEMFILE runs out of descriptors with a full cache: an open still
// succeeds, because the cache gives its descriptors back.
func TestDirCacheEMFILE(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	for i := 0; i < 32; i++ {
		mustMkdirAll(t, fmt.Sprintf("%s/d%d", dir, i))
	}
	mustWrite(t, dir+"/f", "f")
	f := newCached(t, dir, 64, time.Minute)
	var a libservices.Attr
	for i := 0; i < 32; i++ {
		f.Lstat(fmt.Sprintf("d%d/x", i), &a)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// The lowest free descriptor must be above the limit for the open to fail:
	// the limit is the highest open descriptor + 1.
	ents, _ := os.ReadDir("/proc/self/fd")
	maxFD := 0
	for _, e := range ents {
		var n int
		fmt.Sscan(e.Name(), &n)
		maxFD = max(maxFD, n)
	}
	lim := old
	lim.Cur = uint64(maxFD + 1)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Fill the holes below the limit, so that nothing is left.
	var fillers []int
	for len(fillers) < 1<<16 {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fillers = append(fillers, fd)
	}
	h, err := f.Open("f", libservices.O_RDONLY, 0)
	for _, fd := range fillers {
		unix.Close(fd)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("open with the descriptors all in use, 32 of them cached directories: %v", err)
	}
	f.Close(h)
	if n := f.dc.len(); n != 0 {
		t.Errorf("%d entries after EMFILE, want 0", n)
	}
}

// TestDirCacheConcurrent runs goroutines that each rename their own tree back
// and forth and look names up in it, over a cache much smaller than the set of
// directories (so that eviction races every lookup), and a goroutine that
// keeps changing modes: every answer must be the one the goroutine's own last
// change implies, and no descriptor may leak. Run it with -race.
func TestDirCacheConcurrent(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	const workers, rounds = 6, 150
	for w := 0; w < workers; w++ {
		mustMkdirAll(t, fmt.Sprintf("%s/w%d/a/b/c", dir, w))
		mustWrite(t, fmt.Sprintf("%s/w%d/a/b/c/f", dir, w), "f")
	}
	base := openFDs(t)
	ttl := libservices.Duration(200 * time.Microsecond) // real time, short: expiry races lookups too
	f, err := New(Options{Dir: dir, DirCacheSize: 4, DirRevalidate: &ttl})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			root := fmt.Sprintf("w%d", w)
			var a libservices.Attr
			cur, other := "a", "z"
			for r := 0; r < rounds; r++ {
				if err := f.Lstat(root+"/"+cur+"/b/c/f", &a); err != nil {
					errs <- fmt.Errorf("%s round %d: lstat %s/b/c/f: %v", root, r, cur, err)
					return
				}
				if err := f.Rename(root+"/"+cur, root+"/"+other); err != nil {
					errs <- fmt.Errorf("%s round %d: rename: %v", root, r, err)
					return
				}
				if err := f.Lstat(root+"/"+cur+"/b/c/f", &a); err != unix.ENOENT {
					errs <- fmt.Errorf("%s round %d: lstat of the old path %s/b/c/f after own rename: %v", root, r, cur, err)
					return
				}
				h, err := f.Open(root+"/"+other+"/b/c/n", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
				if err != nil {
					errs <- fmt.Errorf("%s round %d: create: %v", root, r, err)
					return
				}
				f.Close(h)
				if err := f.Unlink(root + "/" + other + "/b/c/n"); err != nil {
					errs <- fmt.Errorf("%s round %d: unlink: %v", root, r, err)
					return
				}
				cur, other = other, cur
			}
		}()
	}
	stop := make(chan struct{})
	var chmods sync.WaitGroup
	chmods.Add(1)
	go func() {
		defer chmods.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := f.Setattr(fmt.Sprintf("w%d", i%workers), &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o755}); err != nil {
				errs <- fmt.Errorf("chmod: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	chmods.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.dc.len(); n > 4 {
		t.Errorf("%d entries, over the bound 4", n)
	}
	checkTrees(t, f.dc)
	f.CloseFS()
	if n := openFDs(t); n != base {
		t.Errorf("%d descriptors open after CloseFS, %d before New: a leak", n, base)
	}
}

func TestOptionsValidate(t *testing.T) {
	neg, big, zero := libservices.Duration(-time.Second), libservices.Duration(2*time.Minute), libservices.Duration(0)
	for _, tc := range []struct {
		o    Options
		want string // "" for valid
	}{
		{Options{Dir: "/x"}, ""},
		{Options{Dir: "/x", DirRevalidate: &zero}, ""},
		{Options{Dir: "/x", DirCacheSize: -1}, "dir_cache_size: -1, want 0 (default 1024) to 65536"},
		{Options{Dir: "/x", DirCacheSize: 1 << 17}, "dir_cache_size: 131072"},
		{Options{Dir: "/x", DirRevalidate: &neg}, "dir_revalidate: -1s, want 0 (every use) to 1m0s"},
		{Options{Dir: "/x", DirRevalidate: &big}, "dir_revalidate: 2m0s"},
	} {
		err := tc.o.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	var o Options
	if err := yaml.Unmarshal([]byte("{dir: /x, dir_cache_size: 8, dir_revalidate: 250ms}"), &o); err != nil {
		t.Fatal(err)
	}
	if o.DirCacheSize != 8 || o.DirRevalidate == nil || *o.DirRevalidate != libservices.Duration(250*time.Millisecond) {
		t.Errorf("decoded %+v", o)
	}
	o = Options{}
	if err := yaml.Unmarshal([]byte("{dir: /x, dir_revalidate: 0}"), &o); err != nil || o.DirRevalidate == nil || *o.DirRevalidate != 0 {
		t.Errorf("dir_revalidate: 0 decoded as %v, %v: want 0, not the default", o.DirRevalidate, err)
	}
	for _, bad := range []string{"{dir_revalidate: 5}", "{dir_revalidate: soon}", "{dir_revalidate: [1s]}"} {
		if err := yaml.Unmarshal([]byte(bad), &o); err == nil || !strings.Contains(err.Error(), "not a duration") {
			t.Errorf("%s: %v, want a clear error", bad, err)
		}
	}
	if _, err := New(Options{Dir: "/", DirCacheSize: -5}); err == nil || !strings.Contains(err.Error(), "dir_cache_size") {
		t.Errorf("New with a negative dir_cache_size: %v", err)
	}
}

// TestDirCacheRefusesRacedInsert replays the race of a miss with an own
// rename, in the order that matters: the miss reads the generation and
// resolves, the rename runs and drops its subtree, then the miss inserts what
// it resolved (the directory's old path): refused.
func TestDirCacheRefusesRacedInsert(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	mustMkdirAll(t, dir+"/a/b")
	f := newCached(t, dir, 16, time.Minute)
	gen := f.dc.gen.Load()
	fd, err := f.openat2(f.root, "a/b", unix.O_PATH|unix.O_DIRECTORY, 0, realDirs)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := f.Rename("a", "z"); err != nil {
		t.Fatal(err)
	}
	if e := f.dc.put("a/b", fd, gen, f.clk.Load()); e != nil {
		t.Fatalf("an insert resolved before an own rename was accepted")
	}
	var a libservices.Attr
	if err := f.Lstat("a/b/x", &a); err != unix.ENOENT {
		t.Errorf("lstat a/b/x after rename a z: %v, want ENOENT", err)
	}
}

// TestDirCacheEvictInUse evicts an entry while a call holds it: its
// descriptor stays open until that call releases it.
func TestDirCacheEvictInUse(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	mustMkdirAll(t, dir+"/d0", dir+"/d1", dir+"/d2")
	f := newCached(t, dir, 1, time.Minute)
	d, err := f.openDir("d0", true)
	if err != nil || d.ent == nil {
		t.Fatalf("openDir d0: %+v %v", d, err)
	}
	var a libservices.Attr
	f.Lstat("d1/x", &a) // evicts d0
	f.Lstat("d2/x", &a) // evicts d1
	if f.cached("d0") {
		t.Fatal("d0 still cached in a cache of 1")
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("the evicted descriptor in use: %v", err)
	}
	f.release(d)
	if err := unix.Fstat(d.fd, &st); err != unix.EBADF {
		t.Errorf("the evicted descriptor after its last release: %v, want EBADF", err)
	}
}

// TestDirCacheConfig builds passthrough from configuration: the keys reach
// the FS, and a bad value is an error that names its key.
func TestDirCacheConfig(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	build := func(opts string) (libservices.FS, error) {
		c, err := libservices.ParseFilesystem([]byte("stack:\n  - passthrough: {dir: " + dir + opts + "}\n"))
		if err != nil {
			return nil, err
		}
		return libservices.Build(c, "filesystems[0]", nil)
	}
	fs, err := build(", dir_cache_size: 8, dir_revalidate: 250ms")
	if err != nil {
		t.Fatal(err)
	}
	f := fs.(*FS)
	defer f.CloseFS()
	if f.ReservedFDs() != 9 || f.dc == nil || f.dc.ttl != int64(250*time.Millisecond) {
		t.Errorf("built with dir_cache_size 8, dir_revalidate 250ms: reserved %d, cache %+v", f.ReservedFDs(), f.dc)
	}
	fs, err = build(", dir_revalidate: 0")
	if err != nil {
		t.Fatal(err)
	}
	if fs.(*FS).dc != nil {
		t.Errorf("dir_revalidate 0 built a cache")
	}
	fs.(*FS).CloseFS()
	for _, tc := range []struct{ opts, want string }{
		{", dir_revalidate: -1s", "filesystems[0].stack[0].passthrough: dir_revalidate: -1s, want 0 (every use) to 1m0s"},
		{", dir_cache_size: -2", "dir_cache_size: -2, want 0 (default 1024) to 65536"},
		{", dir_revalidate: 3", "not a duration"},
	} {
		fs, err := build(tc.opts)
		if err == nil {
			fs.(*FS).CloseFS()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.opts, err, tc.want)
		}
	}
}

// checkTrees checks dirCache.trees against the entries: every path's count
// is the number of entries at or below it, and no path counts zero.
func checkTrees(t *testing.T, c *dirCache) {
	t.Helper()
	want := map[string]int32{}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k := range s.m {
			for p := k; ; {
				want[p]++
				i := strings.LastIndexByte(p, '/')
				if i < 0 {
					break
				}
				p = p[:i]
			}
		}
		s.mu.Unlock()
	}
	c.treeMu.Lock()
	defer c.treeMu.Unlock()
	if len(want) != len(c.trees) {
		t.Errorf("trees has %d paths, the entries make %d", len(c.trees), len(want))
	}
	for p, n := range want {
		if c.trees[p] != n {
			t.Errorf("trees[%q] = %d, want %d", p, c.trees[p], n)
		}
	}
}

// TestDirCacheRenameFileSkipsScan checks that an own rename of a file, with
// nothing cached below it, drops nothing, and that a rename of a directory
// with cached entries below drops them (the count per path is right).
func TestDirCacheRenameFileSkipsScan(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	mustMkdirAll(t, dir+"/a/b/c", dir+"/a/bb")
	mustWrite(t, dir+"/a/b/f", "f")
	f := newCached(t, dir, 16, time.Minute)
	var a libservices.Attr
	f.Lstat("a/b/c/x", &a)
	f.Lstat("a/bb/x", &a)
	f.Lstat("a/b/x", &a)
	checkTrees(t, f.dc)
	if err := f.Rename("a/b/f", "a/b/g"); err != nil {
		t.Fatal(err)
	}
	if f.dc.len() != 3 {
		t.Errorf("a rename of a file dropped entries: %d left of 3", f.dc.len())
	}
	if err := f.Rename("a/b", "a/z"); err != nil {
		t.Fatal(err)
	}
	if f.cached("a/b") || f.cached("a/b/c") || !f.cached("a/bb") {
		t.Errorf("after rename a/b a/z: a/b %v, a/b/c %v, a/bb %v; want only a/bb", f.cached("a/b"), f.cached("a/b/c"), f.cached("a/bb"))
	}
	checkTrees(t, f.dc)
}
