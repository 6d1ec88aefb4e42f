package cache

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

// fakeClock replaces a cache's clock: time moves only when a test says so.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64              { return c.ns.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// countedCache is a write-through cache over a counting memfs, with a
// frozen clock.
func countedCache(t testing.TB, o Options) (*FS, *countFS, *fakeClock) {
	t.Helper()
	cf := &countFS{FS: memfs.New(memfs.Options{})}
	c := New(cf, NewStore(1<<20), o)
	clk := &fakeClock{}
	clk.ns.Store(1)
	c.clock = clk.now
	t.Cleanup(func() { c.CloseFS() })
	return c, cf, clk
}

func mustCreate(t testing.TB, fs libservices.FS, name string, data string) {
	t.Helper()
	h, err := fs.Open(name, libservices.O_CREAT|libservices.O_WRONLY|libservices.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if data != "" {
		if _, err := fs.WriteAt(h, []byte(data), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.Close(h); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t testing.TB, fs libservices.FS, name string) {
	t.Helper()
	if err := fs.Mkdir(name, 0o755); err != nil {
		t.Fatalf("mkdir %s: %v", name, err)
	}
}

// expectCalls runs fn and fails unless exactly want lookups reached the FS
// below.
func expectCalls(t *testing.T, cf *countFS, want int64, what string, fn func()) {
	t.Helper()
	cf.reset()
	fn()
	if got := cf.lookups(); got != want {
		t.Errorf("%s: %d lookups below the cache (lstat %d stat %d fstat %d readdir %d readlink %d), want %d",
			what, got, cf.lstat.Load(), cf.stat.Load(), cf.fstat.Load(), cf.readdir.Load(), cf.readlink.Load(), want)
	}
}

func TestNameHitsMakeNoCalls(t *testing.T) {
	c, cf, _ := countedCache(t, Options{})
	mustMkdir(t, c, "d")
	mustCreate(t, c, "d/f", "abc")
	var a libservices.Attr
	if err := c.Lstat("d/f", &a); err != nil || a.Size != 3 {
		t.Fatal(err, a.Size)
	}
	expectCalls(t, cf, 0, "Lstat and Stat of a cached name", func() {
		for range 10 {
			if err := c.Lstat("d/f", &a); err != nil || a.Size != 3 {
				t.Fatal(err, a.Size)
			}
			if err := c.Stat("/d//f", &a); err != nil || a.Size != 3 {
				t.Fatal(err, a.Size)
			}
		}
	})
	if err := c.Lstat("d/nope", &a); err != syscall.ENOENT {
		t.Fatal(err)
	}
	expectCalls(t, cf, 0, "Lstat of a cached absent name, and of a path below it", func() {
		for range 10 {
			if err := c.Lstat("d/nope", &a); err != syscall.ENOENT {
				t.Fatal(err)
			}
			if err := c.Stat("d/nope/x/y", &a); err != syscall.ENOENT {
				t.Fatal(err)
			}
			if err := c.Lstat("d/f/x", &a); err != syscall.ENOTDIR {
				t.Fatal(err)
			}
		}
	})
	// A create ends the negative entry at once.
	mustCreate(t, c, "d/nope", "")
	if err := c.Lstat("d/nope", &a); err != nil {
		t.Fatalf("absent name served after its create: %v", err)
	}
}

// TestNoGlobalGeneration: changes in one directory leave what is cached of
// another one alone.
func TestNoGlobalGeneration(t *testing.T) {
	c, cf, _ := countedCache(t, Options{})
	for _, d := range []string{"a", "b", "b/sub"} {
		mustMkdir(t, c, d)
	}
	mustCreate(t, c, "b/file", "x")
	c.Symlink("file", "b/link")
	var a libservices.Attr
	warm := func() {
		for _, n := range []string{"b", "b/file", "b/sub", "b/missing", "b/link"} {
			c.Lstat(n, &a)
		}
		c.ReadDir("b")
		c.Readlink("b/link")
	}
	warm()
	expectCalls(t, cf, 0, "b after changes in a", func() {
		// Every kind of change, all in a (and the root's entry for a).
		mustCreate(t, c, "a/x", "data")
		c.Mkdir("a/d", 0o755)
		c.Rename("a/x", "a/y")
		c.Link("a/y", "a/z")
		c.Symlink("y", "a/l")
		c.Setattr("a/y", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600})
		c.Setxattr("a/y", "user.k", []byte("v"), 0)
		c.Unlink("a/z")
		c.Rmdir("a/d")
		cf.reset() // the changes' own lookups are not what this counts
		warm()
	})
}

func TestReadDirCachedAndInvalidated(t *testing.T) {
	c, cf, _ := countedCache(t, Options{})
	mustMkdir(t, c, "d")
	mustCreate(t, c, "d/f", "")
	names := func() []string {
		t.Helper()
		ents, err := c.ReadDir("d")
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, e := range ents {
			s = append(s, e.Name)
		}
		slices.Sort(s)
		return s
	}
	names()
	expectCalls(t, cf, 0, "ReadDir of a cached directory", func() {
		ents, _ := c.ReadDir("d")
		ents[0].Name = "scribbled" // the caller's copy
		if got := names(); !slices.Equal(got, []string{"f"}) {
			t.Fatal(got)
		}
	})
	for _, step := range []struct {
		what string
		do   func() error
		want []string
	}{
		{"create", func() error { mustCreate(t, c, "d/g", ""); return nil }, []string{"f", "g"}},
		{"mkdir", func() error { return c.Mkdir("d/s", 0o755) }, []string{"f", "g", "s"}},
		{"rename within", func() error { return c.Rename("d/g", "d/h") }, []string{"f", "h", "s"}},
		{"rename out", func() error { return c.Rename("d/h", "out") }, []string{"f", "s"}},
		{"rename in", func() error { return c.Rename("out", "d/in") }, []string{"f", "in", "s"}},
		{"link", func() error { return c.Link("d/f", "d/f2") }, []string{"f", "f2", "in", "s"}},
		{"symlink", func() error { return c.Symlink("f", "d/l") }, []string{"f", "f2", "in", "l", "s"}},
		{"unlink", func() error { return c.Unlink("d/f2") }, []string{"f", "in", "l", "s"}},
		{"rmdir", func() error { return c.Rmdir("d/s") }, []string{"f", "in", "l"}},
	} {
		names()
		if err := step.do(); err != nil {
			t.Fatal(step.what, err)
		}
		if got := names(); !slices.Equal(got, step.want) {
			t.Fatalf("after %s: ReadDir %v, want %v", step.what, got, step.want)
		}
	}
}

func TestReadlinkCachedAndInvalidated(t *testing.T) {
	c, cf, _ := countedCache(t, Options{})
	if err := c.Symlink("one", "l"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Readlink("l"); s != "one" || err != nil {
		t.Fatal(s, err)
	}
	expectCalls(t, cf, 0, "Readlink of a cached link", func() {
		if s, err := c.Readlink("l"); s != "one" || err != nil {
			t.Fatal(s, err)
		}
	})
	c.Unlink("l")
	if _, err := c.Readlink("l"); err != syscall.ENOENT {
		t.Fatalf("Readlink after unlink: %v", err)
	}
	c.Symlink("two", "l")
	if s, err := c.Readlink("l"); s != "two" || err != nil {
		t.Fatalf("Readlink after a new link: %q %v", s, err)
	}
	c.Symlink("three", "m")
	c.Readlink("m")
	c.Rename("m", "l")
	if s, err := c.Readlink("l"); s != "three" || err != nil {
		t.Fatalf("Readlink after rename over it: %q %v", s, err)
	}
	mustCreate(t, c, "f", "")
	if _, err := c.Readlink("f"); err != syscall.EINVAL {
		t.Fatalf("Readlink of a file: %v", err)
	}
}

// TestRenameDropsSubtree: the cached names below a renamed directory go, and
// both parents' entries and listings.
func TestRenameDropsSubtree(t *testing.T) {
	c, _, _ := countedCache(t, Options{})
	for _, d := range []string{"p", "p/d", "p/d/e", "q"} {
		mustMkdir(t, c, d)
	}
	mustCreate(t, c, "p/d/e/f", "deep")
	var a libservices.Attr
	for _, n := range []string{"p/d", "p/d/e", "p/d/e/f", "q/d", "q/d/e/f", "p", "q"} {
		c.Lstat(n, &a)
	}
	c.ReadDir("p")
	c.ReadDir("q")
	nl := func(n string) uint32 { c.Lstat(n, &a); return a.Nlink }
	pn, qn := nl("p"), nl("q")
	if err := c.Rename("p/d", "q/d"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"p/d", "p/d/e", "p/d/e/f"} {
		if err := c.Lstat(n, &a); err != syscall.ENOENT {
			t.Errorf("%s after its directory moved: %v", n, err)
		}
	}
	if err := c.Lstat("q/d/e/f", &a); err != nil || a.Size != 4 {
		t.Errorf("q/d/e/f after the move: %v size %d", err, a.Size)
	}
	if nl("p") != pn-1 || nl("q") != qn+1 {
		t.Errorf("parents' nlink %d %d, want %d %d", nl("p"), nl("q"), pn-1, qn+1)
	}
	if ents, _ := c.ReadDir("p"); len(ents) != 0 {
		t.Errorf("p lists %v", ents)
	}
	if ents, _ := c.ReadDir("q"); len(ents) != 1 {
		t.Errorf("q lists %v", ents)
	}
	// A file replacing a directory: nothing cached below the old one serves.
	mustMkdir(t, c, "r")
	mustCreate(t, c, "r/x", "")
	c.Lstat("r/x", &a)
	c.Lstat("r/y", &a)
	if err := c.Rmdir("r"); err != syscall.ENOTEMPTY {
		t.Fatal(err)
	}
	c.Unlink("r/x")
	c.Rmdir("r")
	mustCreate(t, c, "r", "")
	for _, n := range []string{"r/x", "r/y"} {
		if err := c.Lstat(n, &a); err != syscall.ENOTDIR {
			t.Errorf("%s below a file: %v", n, err)
		}
	}
}

// TestHardLinksAttrs: a change through one name shows under the others.
func TestHardLinksAttrs(t *testing.T) {
	for _, cachedFirst := range []bool{true, false} {
		c, _, _ := countedCache(t, Options{})
		mustMkdir(t, c, "a")
		mustMkdir(t, c, "b")
		mustCreate(t, c, "a/f", "x")
		c.Link("a/f", "b/g")
		var a libservices.Attr
		c.Lstat("b/g", &a)
		if a.Nlink != 2 {
			t.Fatal(a.Nlink)
		}
		if cachedFirst {
			c.Lstat("a/f", &a)
		}
		h, _ := c.Open("a/f", libservices.O_WRONLY, 0)
		c.WriteAt(h, []byte("longer"), 0)
		c.Close(h)
		if c.Lstat("b/g", &a); a.Size != 6 {
			t.Errorf("size under the other name %d after a write", a.Size)
		}
		c.Setattr("a/f", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600})
		if c.Lstat("b/g", &a); a.Mode&0o777 != 0o600 {
			t.Errorf("mode under the other name %#o after chmod", a.Mode)
		}
		c.Unlink("a/f")
		if c.Lstat("b/g", &a); a.Nlink != 1 {
			t.Errorf("cached %v: nlink under the other name %d after unlink", cachedFirst, a.Nlink)
		}
		c.Link("b/g", "a/f2")
		if c.Lstat("b/g", &a); a.Nlink != 2 {
			t.Errorf("nlink %d after a new link", a.Nlink)
		}
	}
}

// TestOpenResolvesOnce counts what an open costs below the cache.
func TestOpenResolvesOnce(t *testing.T) {
	c, cf, _ := countedCache(t, Options{})
	mustMkdir(t, c, "d")
	mustCreate(t, c, "d/f", "abc")
	var a libservices.Attr
	c.Lstat("d/f", &a)
	c.Lstat("d/none", &a)
	expectCalls(t, cf, 0, "read-only open of a cached name", func() {
		h, err := c.Open("d/f", libservices.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if n, _ := c.ReadAt(h, buf, 0); string(buf[:n]) != "abc" {
			t.Fatalf("read %q", buf[:n])
		}
		c.Close(h)
	})
	expectCalls(t, cf, 0, "read-only open of a name cached as absent", func() {
		if _, err := c.Open("d/none", libservices.O_RDONLY, 0); err != syscall.ENOENT || cf.open.Load() != 0 {
			t.Fatal(err, cf.open.Load())
		}
	})
	expectCalls(t, cf, 1, "read-only open of an uncached name (a Lstat, no Fstat)", func() {
		mustCreate(t, c, "d/g", "")
		cf.reset()
		h, err := c.Open("d/g", libservices.O_RDONLY, 0)
		if err != nil || cf.lstat.Load() != 1 {
			t.Fatal(err, cf.lstat.Load())
		}
		c.Close(h)
	})
	expectCalls(t, cf, 1, "truncating open (one Fstat, no Stat)", func() {
		h, err := c.Open("d/f", libservices.O_WRONLY|libservices.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		c.Close(h)
	})
	if c.Lstat("d/f", &a); a.Size != 0 {
		t.Fatalf("size %d after a truncating open", a.Size)
	}
	expectCalls(t, cf, 1, "exclusive create, then Lstat of it", func() {
		h, err := c.Open("d/new", libservices.O_CREAT|libservices.O_EXCL|libservices.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		c.Close(h)
		if err := c.Lstat("d/new", &a); err != nil || !a.IsRegular() || a.Mode&0o777 != 0o600 {
			t.Fatal(err, a.Mode)
		}
	})
}

// TestOutsideChangesBounded: changes made directly to the directory below
// (passthrough under the cache) are not seen before the timeouts and are
// seen after them.
func TestOutsideChangesBounded(t *testing.T) {
	dir := t.TempDir()
	p, err := passthrough.New(passthrough.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	attrT, negT, dirT := libservices.Duration(2*time.Second), libservices.Duration(time.Second), libservices.Duration(3*time.Second)
	c := New(p, NewStore(1<<20), Options{AttrTimeout: &attrT, NegativeTimeout: &negT, DirTimeout: &dirT})
	defer c.CloseFS()
	clk := &fakeClock{}
	clk.ns.Store(1)
	c.clock = clk.now
	mustMkdir(t, c, "d")
	mustCreate(t, c, "d/f", "abc")
	c.Symlink("f", "d/l")
	var a libservices.Attr
	c.Lstat("d/f", &a)
	c.Lstat("d/new", &a)
	c.Lstat("d/l", &a)
	c.Readlink("d/l")
	c.ReadDir("d")
	// Outside: the file grows and changes mode, a name appears, the link
	// points elsewhere.
	host := func(n string) string { return filepath.Join(dir, n) }
	if err := os.WriteFile(host("d/f"), []byte("abcdef"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(host("d/f"), 0o600)
	os.WriteFile(host("d/new"), nil, 0o644)
	os.Remove(host("d/l"))
	os.Symlink("new", host("d/l"))
	check := func(when string, fOld, newOld, linkOld, dirOld bool) {
		t.Helper()
		c.Lstat("d/f", &a)
		if got := a.Size == 3 && a.Mode&0o777 == 0o644; got != fOld {
			t.Errorf("%s: d/f size %d mode %#o, old view %v", when, a.Size, a.Mode&0o777, fOld)
		}
		if got := c.Lstat("d/new", &a) == syscall.ENOENT; got != newOld {
			t.Errorf("%s: d/new absent %v, want %v", when, got, newOld)
		}
		if s, _ := c.Readlink("d/l"); (s == "f") != linkOld {
			t.Errorf("%s: d/l -> %q, old view %v", when, s, linkOld)
		}
		ents, _ := c.ReadDir("d")
		if got := len(ents) == 2; got != dirOld {
			t.Errorf("%s: d lists %d entries, old view %v", when, len(ents), dirOld)
		}
	}
	check("at once", true, true, true, true)
	clk.advance(time.Duration(negT - 1))
	check("just before the negative timeout", true, true, true, true)
	clk.advance(1)
	check("at the negative timeout", true, false, true, true)
	clk.advance(time.Duration(attrT - negT - 1))
	check("just before the attribute timeout", true, false, true, true)
	clk.advance(1)
	check("at the attribute timeout", false, false, false, true)
	clk.advance(time.Duration(dirT - attrT))
	check("at the directory timeout", false, false, false, false)
	// A file removed outside, its name cached just before.
	clk.advance(time.Duration(attrT))
	if err := c.Lstat("d/f", &a); err != nil {
		t.Fatal(err)
	}
	os.Remove(host("d/f"))
	clk.advance(time.Duration(attrT - 1))
	if err := c.Lstat("d/f", &a); err != nil {
		t.Errorf("removed outside: gone before the timeout (%v)", err)
	}
	clk.advance(1)
	if err := c.Lstat("d/f", &a); err != syscall.ENOENT {
		t.Errorf("removed outside: %v after the timeout", err)
	}
}

// TestZeroTimeoutCachesNothing: attr_timeout 0s sends every lookup below.
func TestZeroTimeoutCachesNothing(t *testing.T) {
	zero := libservices.Duration(0)
	c, cf, _ := countedCache(t, Options{AttrTimeout: &zero})
	mustCreate(t, c, "f", "")
	var a libservices.Attr
	expectCalls(t, cf, 4, "two Lstat, a ReadDir and a Readlink uncached", func() {
		c.Lstat("f", &a)
		c.Lstat("f", &a)
		c.ReadDir(".")
		c.Readlink("f")
	})
	c2, cf2, _ := countedCache(t, Options{NegativeTimeout: &zero, DirTimeout: &zero})
	c2.Lstat("nope", &a)
	c2.ReadDir(".")
	expectCalls(t, cf2, 2, "absent name and listing with their timeouts 0s", func() {
		c2.Lstat("nope", &a)
		c2.ReadDir(".")
	})
}

func TestTimeoutOptions(t *testing.T) {
	neg, long, ok := libservices.Duration(-time.Second), libservices.Duration(2*time.Hour), libservices.Duration(250*time.Millisecond)
	for _, o := range []Options{{AttrTimeout: &neg}, {NegativeTimeout: &long}, {DirTimeout: &neg}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v validated", o)
		} else {
			t.Log(err)
		}
	}
	if err := (&Options{AttrTimeout: &ok, DirTimeout: new(libservices.Duration)}).Validate(); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		yaml string
		ok   bool
	}{
		{"attr_timeout: 250ms\nnegative_timeout: 0s\ndir_timeout: 2s", true},
		{"attr_timeout: 0\nnegative_timeout: 0\ndir_timeout: 0", true},
		{"attr_timeout: 5", false},
		{"attr_timeout: -1s", false},
		{"dir_timeout: 3h", false},
		{"negative_timeout: soon", false},
	} {
		cfg := "stack:\n  - cache: {" + commaJoin(tc.yaml) + "}\n  - memfs: {}\n"
		c, err := libservices.ParseFilesystem([]byte(cfg))
		if err == nil {
			var fs libservices.FS
			fs, err = libservices.Build(c, "fs", &libservices.Env{})
			if err == nil {
				if cl, ok := fs.(libservices.Closer); ok {
					cl.CloseFS()
				}
			}
		}
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.yaml, err)
		} else if err != nil {
			t.Log(err)
		}
	}
}

func commaJoin(s string) string {
	out := []byte{}
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, ", "...)
		} else {
			out = append(out, s[i])
		}
	}
	return string(out)
}

// TestWriteBackSizeOverCachedName: a file with dirty pages reports the
// cache's size and times under a cached name, never the store's, also after
// the pages land.
func TestWriteBackSizeOverCachedName(t *testing.T) {
	cf := &countFS{FS: memfs.New(memfs.Options{})}
	c := New(cf, NewStore(1<<20), wbOptions())
	defer c.CloseFS()
	mustCreate(t, c, "f", "")
	var a libservices.Attr
	c.Lstat("f", &a)
	h, _ := c.Open("f", libservices.O_RDWR, 0)
	c.WriteAt(h, make([]byte, 3*PageSize+5), 0)
	if c.Lstat("f", &a); a.Size != 3*PageSize+5 {
		t.Fatalf("cached name of a dirty file: size %d", a.Size)
	}
	var in libservices.Attr
	cf.FS.Lstat("f", &in)
	if in.Size != 0 {
		t.Fatalf("store has size %d before the flush", in.Size)
	}
	if err := c.Flush(h); err != nil {
		t.Fatal(err)
	}
	if c.Lstat("f", &a); a.Size != 3*PageSize+5 {
		t.Fatalf("after the flush: size %d", a.Size)
	}
	c.Close(h)
	if c.Lstat("f", &a); a.Size != 3*PageSize+5 {
		t.Fatalf("after close: size %d", a.Size)
	}
}

func TestNameStatAllocs(t *testing.T) {
	c, _, _ := countedCache(t, Options{})
	mustMkdir(t, c, "d")
	mustCreate(t, c, "d/f", "")
	var a libservices.Attr
	c.Lstat("d/f", &a)
	c.Lstat("d/none", &a)
	for _, tc := range []struct {
		what string
		fn   func()
	}{
		{"Lstat hit", func() { c.Lstat("d/f", &a) }},
		{"Stat hit", func() { c.Stat("d/f", &a) }},
		{"negative hit", func() { c.Lstat("d/none", &a) }},
	} {
		if n := testing.AllocsPerRun(200, tc.fn); n != 0 {
			t.Errorf("%s allocates %v times", tc.what, n)
		}
	}
}

// yieldFS gives other goroutines a chance in the middle of every lookup, to
// widen the windows a lookup racing a change could hit.
type yieldFS struct{ libservices.FS }

func (y *yieldFS) Lstat(name string, a *libservices.Attr) error {
	runtime.Gosched()
	err := y.FS.Lstat(name, a)
	runtime.Gosched()
	return err
}

func (y *yieldFS) ReadDir(name string) ([]libservices.DirEntry, error) {
	runtime.Gosched()
	e, err := y.FS.ReadDir(name)
	runtime.Gosched()
	return e, err
}

func (y *yieldFS) Reshapes() (uint64, bool) { return 0, true }

// TestNameRaces: lookups race creates, unlinks, renames, links and writes;
// with a clock that never moves (nothing expires), everything the cache
// serves afterwards must match the FS below: a stale entry installed by a
// lookup that lost a race would stay forever.
func TestNameRaces(t *testing.T) {
	inner := memfs.New(memfs.Options{})
	c := New(&yieldFS{inner}, NewStore(1<<20), Options{Attrs: 64})
	defer c.CloseFS()
	c.clock = func() int64 { return 1 }
	var paths []string
	for _, d := range []string{"d0", "d1", "d0/s"} {
		mustMkdir(t, c, d)
		for i := range 3 {
			paths = append(paths, fmt.Sprintf("%s/n%d", d, i))
		}
	}
	dirs := []string{".", "d0", "d1", "d0/s"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	worker := func(seed int64, fn func(r *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed))
			for {
				select {
				case <-stop:
					return
				default:
				}
				fn(r)
			}
		}()
	}
	pick := func(r *rand.Rand) string { return paths[r.Intn(len(paths))] }
	for i := range 2 {
		worker(int64(i), func(r *rand.Rand) {
			var a libservices.Attr
			switch r.Intn(3) {
			case 0:
				c.Lstat(pick(r), &a)
			case 1:
				c.ReadDir(dirs[r.Intn(len(dirs))])
			default:
				c.Stat(pick(r), &a)
			}
		})
	}
	worker(10, func(r *rand.Rand) {
		if r.Intn(2) == 0 {
			if h, err := c.Open(pick(r), libservices.O_CREAT|libservices.O_WRONLY, 0o644); err == nil {
				c.WriteAt(h, make([]byte, r.Intn(100)), 0)
				c.Close(h)
			}
		} else {
			c.Unlink(pick(r))
		}
	})
	worker(11, func(r *rand.Rand) {
		switch r.Intn(4) {
		case 0:
			c.Rename(pick(r), pick(r))
		case 1:
			c.Link(pick(r), pick(r))
		case 2:
			c.Setattr(pick(r), &libservices.SetAttr{Valid: libservices.SetMode, Mode: uint32(r.Intn(0o777))})
		default:
			c.Setattr(pick(r), &libservices.SetAttr{Valid: libservices.SetSize, Size: int64(r.Intn(50))})
		}
	})
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	for _, n := range append(paths, dirs...) {
		var got, want libservices.Attr
		gerr, werr := c.Lstat(n, &got), inner.Lstat(n, &want)
		got.Atime, want.Atime = libservices.Timespec{}, libservices.Timespec{}
		if gerr != werr || got != want {
			t.Errorf("%s: cache %v %+v\n   below %v %+v", n, gerr, got, werr, want)
		}
	}
	for _, d := range dirs {
		got, _ := c.ReadDir(d)
		want, _ := inner.ReadDir(d)
		key := func(e libservices.DirEntry) string { return fmt.Sprint(e.Name, e.Ino, e.Type) }
		var gs, ws []string
		for _, e := range got {
			gs = append(gs, key(e))
		}
		for _, e := range want {
			ws = append(ws, key(e))
		}
		slices.Sort(gs)
		slices.Sort(ws)
		if !slices.Equal(gs, ws) {
			t.Errorf("ReadDir %s: cache %v, below %v", d, gs, ws)
		}
	}
}

// hookFS runs a test's change in the middle of the next lookup of a name:
// after the FS below answered, before the cache installs the answer.
type hookFS struct {
	libservices.FS
	mu       sync.Mutex
	op, name string
	fn       func()
}

// arm sets fn to run in the next op ("lstat", "readdir", "readlink") of name.
func (h *hookFS) arm(op, name string, fn func()) {
	h.mu.Lock()
	h.op, h.name, h.fn = op, name, fn
	h.mu.Unlock()
}

func (h *hookFS) fire(op, name string) {
	h.mu.Lock()
	fn := h.fn
	if op != h.op || name != h.name {
		fn = nil
	} else {
		h.fn = nil
	}
	h.mu.Unlock()
	if fn != nil {
		fn()
	}
}

func (h *hookFS) Lstat(name string, a *libservices.Attr) error {
	err := h.FS.Lstat(name, a)
	h.fire("lstat", name)
	return err
}

func (h *hookFS) ReadDir(name string) ([]libservices.DirEntry, error) {
	e, err := h.FS.ReadDir(name)
	h.fire("readdir", name)
	return e, err
}

func (h *hookFS) Readlink(name string) (string, error) {
	s, err := h.FS.Readlink(name)
	h.fire("readlink", name)
	return s, err
}

// Unlink runs the hook before it unlinks.
func (h *hookFS) Unlink(name string) error {
	h.fire("unlink", name)
	return h.FS.Unlink(name)
}

func (h *hookFS) Reshapes() (uint64, bool) { return 0, true }

// TestLookupLosesRace: a lookup whose answer a change made stale while it was
// on its way up must not cache it (the clock never moves: a stale entry would
// serve forever).
func TestLookupLosesRace(t *testing.T) {
	hf := &hookFS{FS: memfs.New(memfs.Options{})}
	c := New(hf, NewStore(1<<20), Options{})
	defer c.CloseFS()
	c.clock = func() int64 { return 1 }
	for _, d := range []string{"d", "d/e", "w"} {
		mustMkdir(t, c, d)
	}
	mustCreate(t, c, "d/f", "abc")
	mustCreate(t, c, "d/e/g", "")
	c.Symlink("one", "d/l")
	c.Symlink("two", "d/m")
	var a libservices.Attr
	c.Lstat("d", &a)
	c.Lstat("d/e", &a)

	hf.arm("lstat", "d/x", func() { mustCreate(t, c, "d/x", "") })
	c.Lstat("d/x", &a)
	if err := c.Lstat("d/x", &a); err != nil {
		t.Errorf("absence cached across a create: %v", err)
	}

	// Truncating, so that the open leaves d/f's name stale and the Lstat
	// below goes down (a plain open would cache it).
	h, _ := c.Open("d/f", libservices.O_WRONLY|libservices.O_TRUNC, 0)
	hf.arm("lstat", "d/f", func() { c.WriteAt(h, []byte("abcdef"), 0) })
	c.Lstat("d/f", &a)
	c.Close(h)
	if c.Lstat("d/f", &a); a.Size != 6 {
		t.Errorf("size %d cached across a write", a.Size)
	}

	c.Unlink("d/f")
	mustCreate(t, c, "d/f", "abc")
	hf.arm("lstat", "d/f", func() { c.Unlink("d/f") })
	c.Lstat("d/f", &a)
	if err := c.Lstat("d/f", &a); err != syscall.ENOENT {
		t.Errorf("name cached across its unlink: %v", err)
	}

	c.ReadDir("w")
	mustCreate(t, c, "w/a", "") // the listing is dropped; the next one races
	hf.arm("readdir", "w", func() { mustCreate(t, c, "w/b", "") })
	c.ReadDir("w")
	if ents, _ := c.ReadDir("w"); len(ents) != 2 {
		t.Errorf("listing cached across a create: %v", ents)
	}

	hf.arm("lstat", "d/e/g", func() { c.Rename("d/e", "w/e") })
	c.Lstat("d/e/g", &a)
	if err := c.Lstat("d/e/g", &a); err != syscall.ENOENT {
		t.Errorf("name cached below a directory renamed meanwhile: %v", err)
	}

	// An unlink that found the inode of its name (cached) while a rename
	// made the name another file: the other file's names must not keep
	// their nlink.
	mustCreate(t, c, "w/x", "")
	c.Link("w/x", "w/x2")
	mustCreate(t, c, "w/y", "")
	c.Link("w/y", "w/y2")
	c.Lstat("w/x", &a)
	hf.arm("unlink", "w/x", func() {
		c.Rename("w/y", "w/x")
		c.Lstat("w/y2", &a) // nlink 2, cached again
	})
	if err := c.Unlink("w/x"); err != nil {
		t.Fatal(err)
	}
	if c.Lstat("w/y2", &a); a.Nlink != 1 {
		t.Errorf("nlink %d cached after an unlink that raced a rename", a.Nlink)
	}

	hf.arm("readlink", "d/l", func() {
		c.Readlink("d/m")
		c.Rename("d/m", "d/l")
		c.Lstat("d/l", &a) // cached again meanwhile, as the other link
	})
	c.Readlink("d/l")
	if s, _ := c.Readlink("d/l"); s != "two" {
		t.Errorf("link target %q cached across a rename over it", s)
	}
}

// TestUnionCopyUp: a union copies a lower file up (a new inode number) when
// it is opened for writing or changed; the cached name must follow.
func TestUnionCopyUp(t *testing.T) {
	var layers []libservices.FS
	for i, ro := range []bool{false, true} {
		dir := t.TempDir()
		if i == 1 {
			os.Mkdir(filepath.Join(dir, "d"), 0o755)
			os.WriteFile(filepath.Join(dir, "d/f"), []byte("lower"), 0o644)
			os.WriteFile(filepath.Join(dir, "d/g"), []byte("lower"), 0o644)
		}
		p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, p)
	}
	u := union.New(layers[0], layers[1])
	c := New(u, NewStore(1<<20), Options{})
	defer c.CloseFS()
	c.clock = func() int64 { return 1 }
	var a libservices.Attr
	c.Lstat("d/f", &a)
	c.Lstat("d/g", &a)
	h, err := c.Open("d/f", libservices.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(h, []byte("upper and longer"), 0); err != nil {
		t.Fatal(err)
	}
	c.Close(h)
	var want libservices.Attr
	u.Lstat("d/f", &want)
	if c.Lstat("d/f", &a); a.Size != 16 || a.Ino != want.Ino {
		t.Errorf("after a copy-up and a write: size %d ino %d, want 16 and %d", a.Size, a.Ino, want.Ino)
	}
	c.Setattr("d/g", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600})
	u.Lstat("d/g", &want)
	if c.Lstat("d/g", &a); a.Mode&0o777 != 0o600 || a.Ino != want.Ino {
		t.Errorf("after a copy-up by chmod: mode %#o ino %d, want 0600 and %d", a.Mode&0o777, a.Ino, want.Ino)
	}
}
