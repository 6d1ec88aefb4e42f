package access_test

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/memfs"
)

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if want == 0 && err != nil || want != 0 && err != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

var (
	root = fstest.Root
	bob  = fstest.Bob
)

func setMode(t *testing.T, fs libservices.FS, name string, mode uint32) {
	t.Helper()
	must(t, "chmod "+name, fs.Setattr(name, &libservices.SetAttr{Valid: libservices.SetMode, Mode: mode}))
}

func writeNew(t *testing.T, fs libservices.FS, name string, mode uint32) {
	t.Helper()
	h, err := fs.Open(name, libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, mode)
	must(t, "create "+name, err)
	_, err = fs.WriteAt(h, []byte("data"), 0)
	must(t, "write "+name, err)
	must(t, "close "+name, fs.Close(h))
}

// TestMemoFollowsChanges: what the directory memo remembers never outlives a
// change made through any Checker of the process, and a change made behind every
// Checker's back is seen after Invalidate.
func TestMemoFollowsChanges(t *testing.T) {
	m := memfs.New(memfs.Options{})
	c := access.New(m, access.Options{})
	other := access.New(m, access.Options{}) // e.g. a FUSE gateway's
	r, b := c.As(&root), c.As(&bob)
	must(t, "mkdir d", r.Mkdir("d", 0o755))
	must(t, "mkdir d/e", r.Mkdir("d/e", 0o755))
	writeNew(t, r, "d/e/f", 0o644)
	var a libservices.Attr
	for i := 0; i < 3; i++ {
		wantErr(t, "bob stat d/e/f (memo filled)", b.Stat("d/e/f", &a), 0)
	}
	setMode(t, r, "d", 0o700)
	wantErr(t, "bob stat after chmod 0700 through the same Checker", b.Stat("d/e/f", &a), syscall.EACCES)
	setMode(t, other.As(&root), "d", 0o755)
	wantErr(t, "bob stat after chmod 0755 through another Checker", b.Stat("d/e/f", &a), 0)
	setMode(t, other.As(&root), "d/e", 0o700)
	wantErr(t, "bob stat after chmod 0700 of d/e through another Checker", b.Stat("d/e/f", &a), syscall.EACCES)
	setMode(t, r, "d/e", 0o755)
	wantErr(t, "bob stat", b.Stat("d/e/f", &a), 0)
	// A rename replaces the directory under its name.
	must(t, "rename d d2", r.Rename("d", "d2"))
	must(t, "mkdir d", r.Mkdir("d", 0o755))
	must(t, "mkdir d/e", r.Mkdir("d/e", 0o700))
	wantErr(t, "bob stat through the new d/e", b.Lstat("d/e/f", &a), syscall.EACCES)
	// A directory symbolic link replaced by a closed directory.
	must(t, "symlink l", r.Symlink("d2", "l"))
	wantErr(t, "bob stat through l", b.Stat("l/e/f", &a), 0)
	must(t, "unlink l", r.Unlink("l"))
	must(t, "mkdir l", r.Mkdir("l", 0o700))
	wantErr(t, "bob stat through the directory that replaced l", b.Stat("l/e/f", &a), syscall.EACCES)
	// Behind the Checkers' back: the memo does not know until Invalidate.
	wantErr(t, "bob stat d2/e/f", b.Stat("d2/e/f", &a), 0)
	must(t, "chmod d2 on the FS itself", m.Setattr("d2", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o700}))
	wantErr(t, "bob stat d2/e/f, memo not told", b.Stat("d2/e/f", &a), 0)
	access.Invalidate()
	wantErr(t, "bob stat d2/e/f after Invalidate", b.Stat("d2/e/f", &a), syscall.EACCES)
}

// TestMemoConcurrent: callers stat through a directory while it is closed and
// opened again; once a chmod to 0700 has returned, no later stat of the other
// user succeeds.
func TestMemoConcurrent(t *testing.T) {
	c := access.New(memfs.New(memfs.Options{}), access.Options{Dirs: 4})
	r, b := c.As(&root), c.As(&bob)
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		must(t, "mkdir "+d, r.Mkdir(d, 0o755))
	}
	writeNew(t, r, "a/b/c/f", 0o644)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var a libservices.Attr
			for {
				select {
				case <-stop:
					return
				default:
				}
				b.Stat("a/b/c/f", &a)
				b.Lstat("a/b/c", &a)
			}
		}()
	}
	var a libservices.Attr
	for i := 0; i < 200; i++ {
		dir := []string{"a", "a/b", "a/b/c"}[i%3]
		setMode(t, r, dir, 0o700)
		if err := b.Stat("a/b/c/f", &a); err != syscall.EACCES {
			close(stop)
			wg.Wait()
			t.Fatalf("round %d: stat after chmod 0700 of %s: %v, want EACCES", i, dir, err)
		}
		setMode(t, r, dir, 0o755)
		if err := b.Stat("a/b/c/f", &a); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("round %d: stat after chmod 0755 of %s: %v", i, dir, err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestHotPathAllocs: a stat and a read through a Checker allocate nothing more
// than the same calls on the FS itself once the directories are remembered, for
// an unprivileged caller and for root.
func TestHotPathAllocs(t *testing.T) {
	for _, s := range stacks {
		if s.root {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			fs := build(t, s.yaml(t))
			c := access.New(fs, access.Options{})
			r := c.As(&root)
			must(t, "mkdir", r.Mkdir("d", 0o755))
			must(t, "mkdir", r.Mkdir("d/e", 0o755))
			writeNew(t, r, "d/e/f", 0o644)
			writeNew(t, r, "g", 0o644)
			for _, who := range []struct {
				name string
				cr   *access.Cred
			}{{"bob", &bob}, {"root", &root}} {
				v := c.As(who.cr)
				var a libservices.Attr
				h, err := v.Open("d/e/f", libservices.O_RDONLY, 0)
				must(t, "open", err)
				buf := make([]byte, 4)
				inner := h.(interface{ Inner() libservices.Handle }).Inner()
				for _, op := range []struct {
					name       string
					fn, direct func()
				}{
					{"stat", func() { c.Stat(who.cr, "d/e/f", &a) }, func() { fs.Stat("d/e/f", &a) }},
					{"lstat", func() { c.Lstat(who.cr, "d/e/f", &a) }, func() { fs.Lstat("d/e/f", &a) }},
					{"view stat", func() { v.Stat("d/e/f", &a) }, func() { fs.Stat("d/e/f", &a) }},
					{"view stat at the root", func() { v.Stat("g", &a) }, func() { fs.Stat("g", &a) }},
					{"view lstat", func() { v.Lstat("d/e/f", &a) }, func() { fs.Lstat("d/e/f", &a) }},
					{"read", func() { v.ReadAt(h, buf, 0) }, func() { fs.ReadAt(inner, buf, 0) }},
				} {
					base := testing.AllocsPerRun(100, op.direct)
					if n := testing.AllocsPerRun(100, op.fn); n > base {
						t.Errorf("%s: %s allocates %.1f times per call, the FS alone %.1f", who.name, op.name, n, base)
					}
				}
				if err := c.Stat(who.cr, "d/e/f", &a); err != nil || a.Size != 4 {
					t.Fatalf("%s: stat: %v size %d", who.name, err, a.Size)
				}
				v.Close(h)
			}
		})
	}
}

// refuseChown is memfs that refuses to give files away, like a service without
// CAP_CHOWN.
type refuseChown struct {
	*memfs.FS
	asked *atomic.Int64 // chowns asked for
}

func (f refuseChown) Setattr(name string, sa *libservices.SetAttr) error {
	if sa.Valid&(libservices.SetUid|libservices.SetGid) != 0 {
		f.asked.Add(1)
		return syscall.EPERM
	}
	return f.FS.Setattr(name, sa)
}

// TestCreateWithoutChown: where the FS may not give a new file to its maker, the
// file keeps the FS's owner and the create succeeds; set-ID bits asked for are
// still applied (to the FS's owner's file, as the FS's owner could).
func TestCreateWithoutChown(t *testing.T) {
	f := refuseChown{FS: memfs.New(memfs.Options{}), asked: new(atomic.Int64)}
	c := access.New(f, access.Options{})
	r, b := c.As(&root), c.As(&bob)
	setMode(t, r, ".", 0o777)
	writeNew(t, b, "f", 0o640)
	must(t, "mkdir", b.Mkdir("d", 0o750))
	// Refused once, never asked again: a service without CAP_CHOWN would
	// pay a failing call for every file its callers other than itself make.
	writeNew(t, b, "f2", 0o640)
	must(t, "mkdir", b.Mkdir("d2", 0o750))
	if n := f.asked.Load(); n != 1 {
		t.Fatalf("%d chowns asked of an FS that refused the first, want 1", n)
	}
	var a libservices.Attr
	must(t, "lstat", r.Lstat("f", &a))
	if a.Uid != 0 || a.Mode&0o7777 != 0o640 {
		t.Fatalf("f: %d:%d %#o", a.Uid, a.Gid, a.Mode)
	}
	must(t, "lstat", r.Lstat("d", &a))
	if a.Uid != 0 || a.Mode&0o7777 != 0o750 {
		t.Fatalf("d: %d:%d %#o", a.Uid, a.Gid, a.Mode)
	}
}

// TestRemovePrivsRenamed: a write that must clear set-ID bits of a file whose
// path no longer names it is refused rather than leave the bits.
func TestRemovePrivsRenamed(t *testing.T) {
	c := access.New(memfs.New(memfs.Options{}), access.Options{})
	r, b := c.As(&root), c.As(&bob)
	setMode(t, r, ".", 0o777)
	writeNew(t, r, "f", 0o666)
	setMode(t, r, "f", 0o4777)
	h, err := b.Open("f", libservices.O_WRONLY, 0)
	must(t, "open", err)
	defer b.Close(h)
	must(t, "rename", r.Rename("f", "g"))
	writeNew(t, r, "f", 0o666)
	_, err = b.WriteAt(h, []byte("x"), 0)
	wantErr(t, "write through a renamed set-user-ID file", err, syscall.EPERM)
	must(t, "rename back", r.Rename("g", "f"))
	_, err = b.WriteAt(h, []byte("x"), 0)
	wantErr(t, "write", err, 0)
	var a libservices.Attr
	must(t, "lstat", r.Lstat("f", &a))
	if a.Mode&0o7777 != 0o777 {
		t.Fatalf("mode after bob's write: %#o", a.Mode)
	}
	// Known without set-ID bits now: a second write looks at nothing (and
	// allocates nothing more than the FS's own write).
	inner := h.(interface{ Inner() libservices.Handle }).Inner()
	base := testing.AllocsPerRun(50, func() { c.FS().WriteAt(inner, []byte("x"), 0) })
	if n := testing.AllocsPerRun(50, func() { b.WriteAt(h, []byte("x"), 0) }); n > base {
		t.Errorf("write allocates %.1f times, the FS alone %.1f", n, base)
	}
}

func TestNilCredAndWalked(t *testing.T) {
	m := memfs.New(memfs.Options{})
	c := access.New(m, access.Options{})
	var a libservices.Attr
	wantErr(t, "nil cred", c.Stat(nil, ".", &a), syscall.EACCES)
	r := c.As(&root)
	must(t, "mkdir", r.Mkdir("d", 0o700))
	writeNew(t, r, "d/f", 0o644)
	must(t, "symlink", r.Symlink("d/f", "l"))
	w := c.Walked()
	// The kernel walked to d/f already: no search permission is asked for on d.
	wantErr(t, "walked stat below a closed directory", w.Stat(&bob, "d/f", &a), 0)
	wantErr(t, "walked open below a closed directory", func() error {
		h, err := w.Open(&bob, "d/f", libservices.O_RDONLY, 0, nil)
		if err == nil {
			m.Close(h)
		}
		return err
	}(), 0)
	wantErr(t, "walked stat of a symlink", w.Stat(&bob, "l", &a), syscall.ELOOP)
	wantErr(t, "walked chmod by a stranger", w.Setattr(&bob, "d/f", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}), syscall.EPERM)
	wantErr(t, "stat below a closed directory", c.Stat(&bob, "d/f", &a), syscall.EACCES)
	if c.Protected() != (access.Protected{}) && c.ProtectedErr() != nil {
		t.Fatal(c.ProtectedErr())
	}
}

func TestReadProtected(t *testing.T) {
	p, err := access.ReadProtected()
	if err != nil {
		t.Fatal(err)
	}
	want := access.New(memfs.New(memfs.Options{}), access.Options{}).Protected()
	if p != want {
		t.Fatalf("ReadProtected %+v, New read %+v", p, want)
	}
	given := access.Protected{Hardlinks: 1}
	if got := access.New(memfs.New(memfs.Options{}), access.Options{Protected: &given}).Protected(); got != given {
		t.Fatalf("given %+v, got %+v", given, got)
	}
}

// countFS counts the lookups made on memfs.
type countFS struct {
	*memfs.FS
	lookups atomic.Int64
}

func (f *countFS) Lstat(name string, a *libservices.Attr) error {
	f.lookups.Add(1)
	return f.FS.Lstat(name, a)
}

func (f *countFS) Stat(name string, a *libservices.Attr) error {
	f.lookups.Add(1)
	return f.FS.Stat(name, a)
}

// TestOneLookupPerStat: once a directory is remembered, a stat below it is one
// lookup on the FS, through the Checker and through a View, at any depth; a
// change anywhere makes the next stat walk again.
func TestOneLookupPerStat(t *testing.T) {
	f := &countFS{FS: memfs.New(memfs.Options{})}
	c := access.New(f, access.Options{})
	r, b := c.As(&root), c.As(&bob)
	for _, d := range []string{"a", "a/b", "a/b/c", "a/b/c/d"} {
		must(t, "mkdir", r.Mkdir(d, 0o755))
	}
	writeNew(t, r, "a/b/c/d/f", 0o644)
	writeNew(t, r, "top", 0o644)
	var a libservices.Attr
	for _, s := range []struct {
		what string
		fn   func() error
	}{
		{"checker stat", func() error { return c.Stat(&bob, "a/b/c/d/f", &a) }},
		{"view stat", func() error { return b.Stat("a/b/c/d/f", &a) }},
		{"view lstat", func() error { return b.Lstat("a/b/c/d/f", &a) }},
		{"view stat at the root", func() error { return b.Stat("top", &a) }},
	} {
		must(t, s.what, s.fn())
		n0 := f.lookups.Load()
		for i := 0; i < 10; i++ {
			must(t, s.what, s.fn())
		}
		if n := f.lookups.Load() - n0; n != 10 {
			t.Errorf("%s: %d lookups for 10 calls, want 10", s.what, n)
		}
	}
	must(t, "mkdir", r.Mkdir("other", 0o755))
	n0 := f.lookups.Load()
	must(t, "stat", b.Stat("a/b/c/d/f", &a))
	if n := f.lookups.Load() - n0; n < 5 {
		t.Errorf("stat after a change: %d lookups, want a walk", n)
	}
}

// TestMemoKeptAcrossCreateAndUnlink: creating and removing regular files and
// links changes no directory, so what the memo remembers stays: the next stat
// is still one lookup (the create-unlink loop of a store would otherwise walk
// every path again after every file).
func TestMemoKeptAcrossCreateAndUnlink(t *testing.T) {
	f := &countFS{FS: memfs.New(memfs.Options{})}
	c := access.New(f, access.Options{})
	r, b := c.As(&root), c.As(&bob)
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		must(t, "mkdir", r.Mkdir(d, 0o777))
	}
	writeNew(t, r, "a/b/c/f", 0o644)
	var a libservices.Attr
	must(t, "stat", b.Stat("a/b/c/f", &a))
	for i := 0; i < 3; i++ {
		writeNew(t, b, "a/b/c/new", 0o644)
		must(t, "symlink", b.Symlink("new", "a/b/c/ln"))
		must(t, "link", b.Link("a/b/c/new", "a/b/c/hard"))
		for _, n := range []string{"a/b/c/new", "a/b/c/ln", "a/b/c/hard"} {
			must(t, "unlink "+n, b.Unlink(n))
		}
		n0 := f.lookups.Load()
		must(t, "stat", b.Stat("a/b/c/f", &a))
		if n := f.lookups.Load() - n0; n != 1 {
			t.Fatalf("round %d: stat after creates and unlinks made %d lookups, want 1", i, n)
		}
	}
}

// reshapeFS is memfs whose creates also change a directory as a side effect,
// as a union's copy-up may (given to the service's owner, closed to others),
// and say so through libservices.Reshaper.
type reshapeFS struct {
	*memfs.FS
	victim string
	n      atomic.Uint64
}

func (f *reshapeFS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	h, err := f.FS.Open(name, flags, mode)
	if err == nil && flags&libservices.O_CREAT != 0 && f.victim != "" {
		if err := f.FS.Setattr(f.victim, &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o700}); err != nil {
			return nil, err
		}
		f.n.Add(1)
	}
	return h, err
}

func (f *reshapeFS) Reshapes() (uint64, bool) { return f.n.Load(), true }

// TestMemoDroppedOnReshape: a create whose FS reshaped a directory (the count
// moved) drops what the memo remembers, so the closed directory is seen.
func TestMemoDroppedOnReshape(t *testing.T) {
	f := &reshapeFS{FS: memfs.New(memfs.Options{})}
	c := access.New(f, access.Options{})
	r, b := c.As(&root), c.As(&bob)
	must(t, "mkdir d", r.Mkdir("d", 0o755))
	must(t, "mkdir w", r.Mkdir("w", 0o777))
	writeNew(t, r, "d/f", 0o644)
	var a libservices.Attr
	must(t, "stat d/f", b.Stat("d/f", &a)) // remembered: d searchable
	f.victim = "d"
	writeNew(t, b, "w/new", 0o644) // closes d as a side effect
	wantErr(t, "stat d/f after the reshape", b.Stat("d/f", &a), syscall.EACCES)
}

// TestMemoDroppedOnLinkRemoval: a remembered walk through a symbolic link
// does not outlive the link: removing it (and putting another link there)
// makes the next walk follow the new one.
func TestMemoDroppedOnLinkRemoval(t *testing.T) {
	m := memfs.New(memfs.Options{})
	c := access.New(m, access.Options{})
	r, b := c.As(&root), c.As(&bob)
	must(t, "mkdir open", r.Mkdir("open", 0o755))
	must(t, "mkdir closed", r.Mkdir("closed", 0o700))
	writeNew(t, r, "open/f", 0o644)
	writeNew(t, r, "closed/f", 0o644)
	must(t, "symlink", r.Symlink("open", "l"))
	var a libservices.Attr
	must(t, "stat l/f", b.Stat("l/f", &a)) // remembered: l -> open
	must(t, "unlink l", r.Unlink("l"))
	must(t, "symlink again", r.Symlink("closed", "l"))
	wantErr(t, "stat l/f through the new link", b.Stat("l/f", &a), syscall.EACCES)
}
