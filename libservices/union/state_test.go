package union

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// fakeClock replaces f's clock with one the test moves.
func fakeClock(f *FS) *atomic.Int64 {
	var now atomic.Int64
	f.clock = now.Load
	return &now
}

func dur(d time.Duration) *libservices.Duration { v := libservices.Duration(d); return &v }

// hostLower is a union of a memfs upper over a passthrough lower whose host
// directory the test changes behind the union's back.
func hostLower(t *testing.T, timeout *libservices.Duration) (*FS, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "d/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d/old"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	lower, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lower.CloseFS() })
	f, err := NewWithOptions(Options{DirCacheTimeout: timeout}, memfs.New(memfs.Options{}), lower)
	if err != nil {
		t.Fatal(err)
	}
	return f, dir
}

// TestHostChangeVisibleAfterTimeout: a name the host adds to a lower branch
// stays unseen while the directory's state is younger than dir_cache_timeout
// and is seen once it is older; a name the host removes is noticed at once.
func TestHostChangeVisibleAfterTimeout(t *testing.T) {
	f, dir := hostLower(t, dur(time.Second))
	now := fakeClock(f)
	var a libservices.Attr
	wantErr(t, "lstat d/new before", f.Lstat("d/new", &a), syscall.ENOENT)
	must(t, "host create", os.WriteFile(filepath.Join(dir, "d/new"), []byte("n"), 0o644))
	must(t, "host whiteout", os.WriteFile(filepath.Join(dir, "d/.wh.nothing"), nil, 0o644))
	now.Store(int64(999 * time.Millisecond))
	wantErr(t, "lstat d/new within the timeout (state kept)", f.Lstat("d/new", &a), syscall.ENOENT)
	now.Store(int64(time.Second))
	must(t, "lstat d/new after the timeout", f.Lstat("d/new", &a))
	if got := list(t, f, "d"); !slices.Equal(got, []string{"new", "old", "sub"}) {
		t.Fatalf("readdir after host create: %q", got)
	}
	// Removal by the host: the branch says so at the next call.
	must(t, "host remove", os.Remove(filepath.Join(dir, "d/old")))
	wantErr(t, "lstat d/old after host removal", f.Lstat("d/old", &a), syscall.ENOENT)
	h, err := f.Open("d/old", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
	must(t, "create d/old again", err)
	must(t, "close", f.Close(h))
	// A file the host replaces by a directory: the Lstat that sees the new type
	// drops the state, so the directory's contents show at once.
	must(t, "host file", os.WriteFile(filepath.Join(dir, "d/f2"), nil, 0o644))
	now.Add(int64(2 * time.Second))
	must(t, "lstat d/f2", f.Lstat("d/f2", &a))
	must(t, "host removes f2", os.Remove(filepath.Join(dir, "d/f2")))
	must(t, "host dir f2", os.MkdirAll(filepath.Join(dir, "d/f2/x"), 0o755))
	must(t, "lstat d/f2, now a directory", f.Lstat("d/f2", &a))
	must(t, "lstat d/f2/x", f.Lstat("d/f2/x", &a))
	// A directory the host makes opaque hides its lower contents after the
	// timeout; one it replaces by a file, likewise.
	must(t, "host file in sub", os.WriteFile(filepath.Join(dir, "d/sub/x"), nil, 0o644))
	now.Add(int64(2 * time.Second))
	must(t, "lstat d/sub/x", f.Lstat("d/sub/x", &a))
	must(t, "host removes sub", os.RemoveAll(filepath.Join(dir, "d/sub")))
	must(t, "host file sub", os.WriteFile(filepath.Join(dir, "d/sub"), []byte("f"), 0o644))
	now.Add(int64(2 * time.Second))
	wantErr(t, "lstat d/sub/x after sub became a file", f.Lstat("d/sub/x", &a), syscall.ENOTDIR)
	must(t, "lstat d/sub", f.Lstat("d/sub", &a))
	if !a.IsRegular() {
		t.Fatalf("d/sub: mode %#o, want a file", a.Mode)
	}
}

// TestNoCacheTimeoutZero: with dir_cache_timeout 0 union keeps no state and
// sees every host change at once.
func TestNoCacheTimeoutZero(t *testing.T) {
	f, dir := hostLower(t, dur(0))
	var a libservices.Attr
	wantErr(t, "lstat d/new before", f.Lstat("d/new", &a), syscall.ENOENT)
	must(t, "host create", os.WriteFile(filepath.Join(dir, "d/new"), nil, 0o644))
	must(t, "lstat d/new at once", f.Lstat("d/new", &a))
	if n := len(f.states); n != 0 {
		t.Fatalf("timeout 0 kept %d states", n)
	}
}

// view is the merged view as a list of "path type" lines, walking from the
// root, for comparing a union with state against one without.
func view(t *testing.T, f libservices.FS) []string {
	t.Helper()
	var out []string
	var walk func(p string)
	walk = func(p string) {
		ents, err := f.ReadDir(p)
		must(t, "readdir "+p, err)
		for _, e := range ents {
			q := libservices.Join(p, e.Name)
			var a libservices.Attr
			must(t, "lstat "+q, f.Lstat(q, &a))
			out = append(out, fmt.Sprintf("%s %o", q, a.Mode&syscall.S_IFMT))
			if a.IsDir() {
				walk(q)
			}
		}
	}
	walk(".")
	slices.Sort(out)
	return out
}

// probeAll asks f for every name of names in every directory of dirs, so that
// negative and positive answers are both compared.
func probeAll(f libservices.FS, dirs, names []string) []string {
	var out []string
	for _, d := range dirs {
		for _, n := range names {
			var a libservices.Attr
			err := f.Lstat(libservices.Join(d, n), &a)
			out = append(out, fmt.Sprintf("%s/%s %v %o", d, n, err, a.Mode&syscall.S_IFMT))
		}
	}
	return out
}

// upperInvariant checks that the upper branch never holds a name and its
// whiteout, and no temporary.
func upperInvariant(t *testing.T, up libservices.FS) {
	t.Helper()
	var walk func(p string)
	walk = func(p string) {
		ents, err := up.ReadDir(p)
		must(t, "upper readdir "+p, err)
		have := map[string]bool{}
		for _, e := range ents {
			have[e.Name] = true
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name, tmpPrefix) {
				t.Fatalf("temporary left in %s: %s", p, e.Name)
			}
			if w, ok := strings.CutPrefix(e.Name, whPrefix); ok && w != opaqueTag[len(whPrefix):] && have[w] {
				t.Fatalf("%s holds both %s and its whiteout", p, w)
			}
			if e.Type == syscall.S_IFDIR {
				walk(libservices.Join(p, e.Name))
			}
		}
	}
	walk(".")
}

// mergeFixture is a memfs upper over two memfs lowers with merged, lower-only
// and whited-out directories, and the same branches seen by a union without
// state (the oracle).
func mergeFixture(t *testing.T, o Options) (cached, oracle *FS, up *memfs.FS) {
	t.Helper()
	up = memfs.New(memfs.Options{})
	l1, l2 := memfs.New(memfs.Options{}), memfs.New(memfs.Options{})
	mkfile := func(b libservices.FS, p string) {
		h, err := b.Open(p, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
		must(t, "create "+p, err)
		must(t, "close", b.Close(h))
	}
	for _, b := range []libservices.FS{up, l1, l2} {
		must(t, "mkdir", b.Mkdir("m", 0o755))
	}
	must(t, "mkdir", l1.Mkdir("a", 0o755))
	must(t, "mkdir", l1.Mkdir("a/b", 0o755))
	must(t, "mkdir", l2.Mkdir("a", 0o755))
	must(t, "mkdir", l2.Mkdir("o", 0o755))
	must(t, "mkdir", l1.Mkdir("o", 0o755))
	mkfile(l1, "o/.wh..wh..opq") // l1's o hides l2's
	mkfile(l2, "o/hidden")
	mkfile(l1, "o/shown")
	mkfile(l1, "a/x")
	mkfile(l2, "a/y")
	mkfile(l2, "a/x")
	mkfile(l1, "a/b/z")
	mkfile(l1, "m/x")
	mkfile(l2, "m/y")
	mkfile(up, "m/u")
	mkfile(l1, ".wh.gone")
	mkfile(l2, "gone")
	mkfile(l1, "m/.wh.w")
	mkfile(l2, "m/w")
	var err error
	cached, err = NewWithOptions(o, up, l1, l2)
	must(t, "new", err)
	oracle, err = NewWithOptions(Options{DirCacheTimeout: dur(0)}, up, l1, l2)
	must(t, "new oracle", err)
	return cached, oracle, up
}

var (
	opDirs  = []string{".", "m", "a", "a/b", "o", "n", "m/n"}
	opNames = []string{"x", "y", "z", "w", "u", "gone", "hidden", "shown", "n", "b"}
)

// randomOp applies one random namespace operation to f, ignoring its error
// (the union with state and the oracle see the same branches; only their
// views are compared).
func randomOp(f libservices.FS, r *rand.Rand) string {
	p := func() string { return libservices.Join(opDirs[r.IntN(len(opDirs))], opNames[r.IntN(len(opNames))]) }
	switch r.IntN(9) {
	case 0, 1:
		q := p()
		h, err := f.Open(q, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
		if err == nil {
			f.Close(h)
		}
		return "create " + q
	case 2:
		q := p()
		f.Unlink(q)
		return "unlink " + q
	case 3:
		q := p()
		f.Mkdir(q, 0o755)
		return "mkdir " + q
	case 4:
		q := p()
		f.Rmdir(q)
		return "rmdir " + q
	case 5:
		q, s := p(), p()
		f.Rename(q, s)
		return "rename " + q + " " + s
	case 6:
		q := p()
		f.Setattr(q, &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600})
		return "chmod " + q
	case 7:
		q, s := p(), p()
		f.Symlink("../x", q)
		f.Link(s, q)
		return "symlink/link " + q + " " + s
	default:
		q := p()
		h, err := f.Open(q, libservices.O_RDWR, 0)
		if err == nil {
			f.Close(h)
		}
		return "open rw " + q
	}
}

// TestStateMatchesBranches: after each of many random changes through a union
// that keeps state (whiteouts, opaque directories, copy-up, renames across
// branches), every lookup answers as a union that asks the branches afresh.
func TestStateMatchesBranches(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		cached, oracle, up := mergeFixture(t, Options{})
		// Odd seeds: the state never expires, only coherence keeps it right.
		// Even seeds: it expires now and then, so that states are also built
		// over directories that hold whiteouts and opaque markers.
		now := fakeClock(cached)
		r := rand.New(rand.NewPCG(seed, 0))
		var trail []string
		for i := 0; i < 300; i++ {
			if seed%2 == 0 && r.IntN(8) == 0 {
				now.Add(int64(2 * time.Second))
			}
			trail = append(trail, randomOp(cached, r))
			got, want := probeAll(cached, opDirs, opNames), probeAll(oracle, opDirs, opNames)
			if !slices.Equal(got, want) {
				for j := range got {
					if got[j] != want[j] {
						t.Fatalf("seed %d after %q: with state %s, branches say %s", seed, trail[max(0, len(trail)-5):], got[j], want[j])
					}
				}
			}
		}
		if got, want := view(t, cached), view(t, oracle); !slices.Equal(got, want) {
			t.Fatalf("seed %d: view with state %q, branches %q", seed, got, want)
		}
		upperInvariant(t, up)
	}
}

// TestConcurrentChanges runs creates, unlinks, renames, mkdirs and rmdirs
// from several goroutines over merged and lower-only directories (run it with
// -race), then checks that the state agrees with the branches and that the
// upper branch holds no name beside its whiteout.
func TestConcurrentChanges(t *testing.T) {
	cached, oracle, up := mergeFixture(t, Options{})
	fakeClock(cached)
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 200; i++ {
				randomOp(cached, r)
				var a libservices.Attr
				cached.Lstat(libservices.Join(opDirs[r.IntN(len(opDirs))], opNames[r.IntN(len(opNames))]), &a)
			}
		}()
	}
	wg.Wait()
	if got, want := probeAll(cached, opDirs, opNames), probeAll(oracle, opDirs, opNames); !slices.Equal(got, want) {
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("after concurrent changes: with state %s, branches say %s", got[j], want[j])
			}
		}
	}
	if got, want := view(t, cached), view(t, oracle); !slices.Equal(got, want) {
		t.Fatalf("view with state %q, branches %q", got, want)
	}
	upperInvariant(t, up)
}

// TestConcurrentCreateUnlinkSameName races creates and unlinks of the same
// names in a merged directory: each goroutine's own name must behave as if
// alone, and the final state must agree with the branches.
func TestConcurrentCreateUnlinkSameName(t *testing.T) {
	cached, oracle, up := mergeFixture(t, Options{})
	fakeClock(cached)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := fmt.Sprintf("m/g%d", g)
			for i := 0; i < 300; i++ {
				h, err := cached.Open(p, libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
				if err != nil {
					errs <- fmt.Errorf("create %s: %v", p, err)
					return
				}
				cached.Close(h)
				var a libservices.Attr
				if err := cached.Lstat(p, &a); err != nil {
					errs <- fmt.Errorf("lstat %s after create: %v", p, err)
					return
				}
				if err := cached.Unlink(p); err != nil {
					errs <- fmt.Errorf("unlink %s: %v", p, err)
					return
				}
				if err := cached.Lstat(p, &a); err != syscall.ENOENT {
					errs <- fmt.Errorf("lstat %s after unlink: %v", p, err)
					return
				}
				// Shared names: results vary, the state must stay right.
				cached.Unlink("m/x")
				if h, err := cached.Open("m/x", libservices.O_CREAT|libservices.O_WRONLY, 0o644); err == nil {
					cached.Close(h)
				}
				cached.Rename("m/x", "m/y")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, want := probeAll(cached, opDirs, opNames), probeAll(oracle, opDirs, opNames); !slices.Equal(got, want) {
		t.Fatalf("with state %q\nbranches %q", got, want)
	}
	upperInvariant(t, up)
}

// TestEviction: the states kept stay within max_dirs and max_names, the
// least recently used go first, and what is evicted is rebuilt correctly.
func TestEviction(t *testing.T) {
	up := memfs.New(memfs.Options{})
	for i := 0; i < 10; i++ {
		d := fmt.Sprintf("d%d", i)
		must(t, "mkdir", up.Mkdir(d, 0o755))
		for j := 0; j <= i; j++ {
			h, err := up.Open(fmt.Sprintf("%s/f%d", d, j), libservices.O_CREAT|libservices.O_WRONLY, 0o644)
			must(t, "create", err)
			up.Close(h)
		}
	}
	f, err := NewWithOptions(Options{MaxDirs: 3}, up, memfs.New(memfs.Options{}))
	must(t, "new", err)
	fakeClock(f)
	counters := func(f *FS) map[string]int64 {
		m := map[string]int64{}
		f.Counters(func(n string, v int64) { m[n] = v })
		return m
	}
	var a libservices.Attr
	for round := 0; round < 2; round++ {
		for i := 0; i < 10; i++ {
			must(t, "lstat", f.Lstat(fmt.Sprintf("d%d/f%d", i, i), &a))
			wantErr(t, "lstat missing", f.Lstat(fmt.Sprintf("d%d/f%d", i, i+1), &a), syscall.ENOENT)
			if c := counters(f); c["union_dir_states"] > 3 {
				t.Fatalf("max_dirs exceeded: %v", c)
			}
		}
	}
	if c := counters(f); c["union_dir_state_evictions"] == 0 {
		t.Fatalf("no eviction: %v", c)
	}
	// The most recently used directory is kept: a lookup in it lists nothing.
	cu := &counting{FS: up}
	f.layers[0] = cu
	must(t, "lstat d9", f.Lstat("d9/f0", &a))
	if n := cu.n.Load(); n != 1 {
		t.Fatalf("lookup in the most recently used directory: %d upper calls, want 1", n)
	}
	// max_names bounds the names kept; a directory with more than an eighth
	// of it is not kept, and answers by probing.
	f, err = NewWithOptions(Options{MaxNames: 24}, up, memfs.New(memfs.Options{}))
	must(t, "new", err)
	fakeClock(f)
	for round := 0; round < 2; round++ {
		for i := 0; i < 10; i++ {
			must(t, "lstat", f.Lstat(fmt.Sprintf("d%d/f%d", i, i), &a))
			wantErr(t, "lstat missing", f.Lstat(fmt.Sprintf("d%d/f%d", i, i+1), &a), syscall.ENOENT)
			if c := counters(f); c["union_dir_state_names"] > 24 {
				t.Fatalf("max_names exceeded: %v", c)
			}
		}
	}
	if s := f.states["d9"]; s != nil && !s.big {
		t.Fatal("a directory of 10 names was kept with max_names 24")
	}
}

// TestOptions: dir_cache_timeout, max_dirs and max_names come from the stack
// configuration; bad values are errors that name the key.
func TestOptions(t *testing.T) {
	build := func(opts string) (libservices.FS, error) {
		c, err := libservices.ParseFilesystem([]byte("stack:\n  - union: " + opts + "\nbranches:\n  - memfs: {}\n  - memfs: {}\n"))
		if err != nil {
			return nil, err
		}
		return libservices.Build(c, "fs", nil)
	}
	f, err := build("{dir_cache_timeout: 250ms, max_dirs: 7, max_names: 800}")
	must(t, "build", err)
	u := f.(*FS)
	if u.timeout != 250*time.Millisecond || u.maxDirs != 7 || u.maxNames != 800 {
		t.Fatalf("options not applied: %v %d %d", u.timeout, u.maxDirs, u.maxNames)
	}
	f, err = build("{}")
	must(t, "build defaults", err)
	if u := f.(*FS); u.timeout != DefaultDirCacheTimeout || u.maxDirs != DefaultMaxDirs {
		t.Fatalf("defaults: %v %d", u.timeout, u.maxDirs)
	}
	f, err = build("{dir_cache_timeout: 0s}")
	must(t, "build no cache", err)
	if f.(*FS).cacheOn() {
		t.Fatal("dir_cache_timeout 0 keeps state")
	}
	for opts, want := range map[string]string{
		"{dir_cache_timeout: -1s}": "fs.stack[0].union: dir_cache_timeout:",
		"{dir_cache_timeout: 2h}":  "fs.stack[0].union: dir_cache_timeout:",
		"{max_dirs: -1}":           "fs.stack[0].union: max_dirs:",
		"{max_names: -5}":          "fs.stack[0].union: max_names:",
	} {
		if _, err := build(opts); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want an error starting %q", opts, err, want)
		}
	}
}

// TestRemovedDirStateDropped: the state of a directory removed or renamed,
// and of the directories below it, is dropped (memory, and no stale state
// for a later directory of the same name).
func TestRemovedDirStateDropped(t *testing.T) {
	cached, _, _ := mergeFixture(t, Options{})
	fakeClock(cached)
	must(t, "mkdir", cached.Mkdir("n", 0o755))
	must(t, "mkdir", cached.Mkdir("n/s", 0o755))
	var a libservices.Attr
	wantErr(t, "lstat", cached.Lstat("n/s/x", &a), syscall.ENOENT)
	if cached.states["n/s"] == nil {
		t.Fatal("no state for n/s after a lookup in it")
	}
	must(t, "rename", cached.Rename("n", "r"))
	if cached.states["n"] != nil || cached.states["n/s"] != nil {
		t.Fatal("states of a renamed directory kept")
	}
	wantErr(t, "lstat", cached.Lstat("r/s/x", &a), syscall.ENOENT)
	must(t, "rmdir", cached.Rmdir("r/s"))
	if cached.states["r/s"] != nil {
		t.Fatal("state of a removed directory kept")
	}
}
