package fslib_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/libservices/memfs"
)

// The differential test runs one random sequence of operations against package os
// on a host directory (the reference), and against fslib over passthrough and over
// memfs, and compares every result: values, and errors by type, Op, Path and errno.
//
// Left out on purpose, as documented differences: perm bits the process umask
// would mask (fslib applies none), names with a trailing slash or "..", O_CREATE
// through a dangling symlink (passthrough refuses it), Seek and batched listing on
// directory Files (fslib lists sorted, os in directory order), timestamps.

type diffFS interface {
	Stat(string) (fs.FileInfo, error)
	Lstat(string) (fs.FileInfo, error)
	Mkdir(string, fs.FileMode) error
	MkdirAll(string, fs.FileMode) error
	Remove(string) error
	RemoveAll(string) error
	Rename(string, string) error
	Link(string, string) error
	Symlink(string, string) error
	Readlink(string) (string, error)
	Truncate(string, int64) error
	Chmod(string, fs.FileMode) error
	ReadDir(string) ([]fs.DirEntry, error)
	ReadFile(string) ([]byte, error)
	WriteFile(string, []byte, fs.FileMode) error
	OpenFile(string, int, fs.FileMode) (diffFile, error)
}

// diffFile is what *os.File and *fslib.File have in common.
type diffFile interface {
	Name() string
	Read([]byte) (int, error)
	ReadAt([]byte, int64) (int, error)
	Write([]byte) (int, error)
	WriteAt([]byte, int64) (int, error)
	Seek(int64, int) (int64, error)
	Stat() (fs.FileInfo, error)
	Truncate(int64) error
	Sync() error
	Close() error
	ReadDir(int) ([]fs.DirEntry, error)
}

// osFS is package os rooted at a host directory.
type osFS struct{ root string }

func (o osFS) p(name string) string                    { return o.root + "/" + name }
func (o osFS) Stat(n string) (fs.FileInfo, error)      { return os.Stat(o.p(n)) }
func (o osFS) Lstat(n string) (fs.FileInfo, error)     { return os.Lstat(o.p(n)) }
func (o osFS) Mkdir(n string, m fs.FileMode) error     { return os.Mkdir(o.p(n), m) }
func (o osFS) MkdirAll(n string, m fs.FileMode) error  { return os.MkdirAll(o.p(n), m) }
func (o osFS) Remove(n string) error                   { return os.Remove(o.p(n)) }
func (o osFS) RemoveAll(n string) error                { return os.RemoveAll(o.p(n)) }
func (o osFS) Rename(a, b string) error                { return os.Rename(o.p(a), o.p(b)) }
func (o osFS) Link(a, b string) error                  { return os.Link(o.p(a), o.p(b)) }
func (o osFS) Symlink(target, n string) error          { return os.Symlink(target, o.p(n)) }
func (o osFS) Readlink(n string) (string, error)       { return os.Readlink(o.p(n)) }
func (o osFS) Truncate(n string, s int64) error        { return os.Truncate(o.p(n), s) }
func (o osFS) Chmod(n string, m fs.FileMode) error     { return os.Chmod(o.p(n), m) }
func (o osFS) ReadDir(n string) ([]fs.DirEntry, error) { return os.ReadDir(o.p(n)) }
func (o osFS) ReadFile(n string) ([]byte, error)       { return os.ReadFile(o.p(n)) }
func (o osFS) WriteFile(n string, d []byte, m fs.FileMode) error {
	return os.WriteFile(o.p(n), d, m)
}
func (o osFS) OpenFile(n string, flag int, m fs.FileMode) (diffFile, error) {
	f, err := os.OpenFile(o.p(n), flag, m)
	if err != nil {
		return nil, err
	}
	return f, nil
}

type clientFS struct{ *fslib.Client }

func (c clientFS) OpenFile(n string, flag int, m fs.FileMode) (diffFile, error) {
	f, err := c.Client.OpenFile(n, flag, m)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// describe renders a result so that equal behaviour renders equal strings: host
// paths lose their root prefix, errors become type/Op/Path/errno.
func describe(root string, v ...any) string {
	var b strings.Builder
	strip := func(p string) string { return strings.TrimPrefix(p, root+"/") }
	for _, x := range v {
		switch x := x.(type) {
		case nil:
			b.WriteString("nil")
		case error:
			var pe *fs.PathError
			var le *os.LinkError
			switch {
			case errors.Is(x, fslib.ErrWriteAtInAppendMode):
				// A PathError in fslib, os's bare error: a documented difference.
				b.WriteString("WriteAtInAppendMode")
			case errors.As(x, &pe):
				fmt.Fprintf(&b, "PathError{%s %s %s}", pe.Op, strip(pe.Path), errKey(pe.Err))
			case errors.As(x, &le):
				fmt.Fprintf(&b, "LinkError{%s %s %s %s}", le.Op, strip(le.Old), strip(le.New), errKey(le.Err))
			default:
				b.WriteString(errKey(x))
			}
		case fs.FileInfo:
			size := x.Size()
			if x.IsDir() {
				size = -1 // directory sizes are the filesystem's business
			}
			fmt.Fprintf(&b, "info{%s %v %d}", x.Name(), x.Mode(), size)
		case []fs.DirEntry:
			b.WriteString("[")
			for _, e := range x {
				fmt.Fprintf(&b, "%s:%v ", e.Name(), e.Type())
			}
			b.WriteString("]")
		case []byte:
			fmt.Fprintf(&b, "%q", x)
		case string:
			b.WriteString(strip(x))
		default:
			fmt.Fprintf(&b, "%v", x)
		}
		b.WriteString(" ")
	}
	return b.String()
}

func errKey(err error) string {
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		return fmt.Sprintf("errno(%d %v)", int(e), e)
	case err == io.EOF:
		return "EOF"
	case err == io.ErrShortWrite:
		return "ErrShortWrite"
	case errors.Is(err, os.ErrClosed):
		return "ErrClosed"
	case errors.Is(err, fslib.ErrWriteAtInAppendMode) || strings.Contains(err.Error(), "invalid use of WriteAt"):
		return "WriteAtInAppendMode"
	}
	return "other(" + err.Error() + ")"
}

// errnoOnly reduces a result to its errno, for RemoveAll and MkdirAll, whose
// Op and Path on failure are os's walk internals.
func errnoOnly(err error) string {
	if err == nil {
		return "nil"
	}
	return errKey(err)
}

type diffRun struct {
	t      *testing.T
	rng    *rand.Rand
	roots  []string // "" for the fslib implementations
	impls  []diffFS
	names  []string // implementation names
	files  [][]diffFile
	isDir  []bool // per open-file slot
	append []bool // per open-file slot: opened with O_APPEND
	perms  []fs.FileMode
	hist   []string
	umaskv fs.FileMode
}

var components = []string{"a", "b", "c"}

func (r *diffRun) name() string {
	n := 1 + r.rng.IntN(3)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = components[r.rng.IntN(len(components))]
	}
	return strings.Join(parts, "/")
}

func (r *diffRun) data() []byte {
	b := make([]byte, r.rng.IntN(64))
	for i := range b {
		b[i] = byte('a' + r.rng.IntN(26))
	}
	return b
}

func (r *diffRun) perm() fs.FileMode { return r.perms[r.rng.IntN(len(r.perms))] }

// each runs fn on every implementation and fails unless all results match os's.
func (r *diffRun) each(what string, fn func(i int, x diffFS) string) {
	r.t.Helper()
	r.hist = append(r.hist, what)
	ref := fn(0, r.impls[0])
	for i := 1; i < len(r.impls); i++ {
		if got := fn(i, r.impls[i]); got != ref {
			r.fail(fmt.Sprintf("%s: %s gives\n\t%s\nos gives\n\t%s", what, r.names[i], got, ref))
		}
	}
}

func (r *diffRun) fail(msg string) {
	r.t.Helper()
	start := max(0, len(r.hist)-30)
	r.t.Fatalf("%s\nlast operations:\n\t%s", msg, strings.Join(r.hist[start:], "\n\t"))
}

// danglingCreate reports whether name is a symlink whose target does not exist
// (on the reference): creating through it is a documented passthrough limit.
func (r *diffRun) danglingCreate(name string) bool {
	o := r.impls[0]
	if fi, err := o.Lstat(name); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return false
	}
	_, err := o.Stat(name)
	return err != nil
}

func (r *diffRun) step() {
	d := func(i int, v ...any) string { return describe(r.roots[i], v...) }
	switch op := r.rng.IntN(100); {
	case op < 10:
		name, data, perm := r.name(), r.data(), r.perm()
		if r.danglingCreate(name) {
			return
		}
		r.each(fmt.Sprintf("WriteFile(%s, %q, %v)", name, data, perm), func(i int, x diffFS) string {
			return d(i, x.WriteFile(name, data, perm))
		})
	case op < 16:
		name := r.name()
		r.each("ReadFile("+name+")", func(i int, x diffFS) string { b, err := x.ReadFile(name); return d(i, b, err) })
	case op < 22:
		name, perm := r.name(), r.perm()
		r.each(fmt.Sprintf("Mkdir(%s, %v)", name, perm), func(i int, x diffFS) string { return d(i, x.Mkdir(name, perm)) })
	case op < 25:
		name, perm := r.name(), r.perm()
		r.each(fmt.Sprintf("MkdirAll(%s, %v)", name, perm), func(i int, x diffFS) string { return errnoOnly(x.MkdirAll(name, perm)) })
	case op < 31:
		name := r.name()
		r.each("Remove("+name+")", func(i int, x diffFS) string { return d(i, x.Remove(name)) })
	case op < 33:
		name := r.name()
		r.each("RemoveAll("+name+")", func(i int, x diffFS) string { return errnoOnly(x.RemoveAll(name)) })
	case op < 39:
		a, b := r.name(), r.name()
		r.each("Rename("+a+", "+b+")", func(i int, x diffFS) string { return d(i, x.Rename(a, b)) })
	case op < 42:
		a, b := r.name(), r.name()
		r.each("Link("+a+", "+b+")", func(i int, x diffFS) string { return d(i, x.Link(a, b)) })
	case op < 46:
		target, name := r.name(), r.name()
		if r.rng.IntN(4) == 0 {
			target = "missing"
		}
		r.each("Symlink("+target+", "+name+")", func(i int, x diffFS) string { return d(i, x.Symlink(target, name)) })
	case op < 48:
		name := r.name()
		r.each("Readlink("+name+")", func(i int, x diffFS) string { s, err := x.Readlink(name); return d(i, s, err) })
	case op < 54:
		name := r.name()
		r.each("Stat("+name+")", func(i int, x diffFS) string { fi, err := x.Stat(name); return d(i, fi, err) })
	case op < 58:
		name := r.name()
		r.each("Lstat("+name+")", func(i int, x diffFS) string { fi, err := x.Lstat(name); return d(i, fi, err) })
	case op < 61:
		name, size := r.name(), int64(r.rng.IntN(150))
		r.each(fmt.Sprintf("Truncate(%s, %d)", name, size), func(i int, x diffFS) string { return d(i, x.Truncate(name, size)) })
	case op < 63:
		name, perm := r.name(), r.perm()
		r.each(fmt.Sprintf("Chmod(%s, %v)", name, perm), func(i int, x diffFS) string { return d(i, x.Chmod(name, perm)) })
	case op < 67:
		name := r.name()
		if r.rng.IntN(3) == 0 {
			name = "."
		}
		r.each("ReadDir("+name+")", func(i int, x diffFS) string { ents, err := x.ReadDir(name); return d(i, ents, err) })
	case op < 69:
		r.listDir()
	case op < 76:
		r.open()
	default:
		r.fileOp()
	}
}

var accModes = []int{os.O_RDONLY, os.O_WRONLY, os.O_RDWR}

func (r *diffRun) open() {
	if len(r.files[0]) >= 6 {
		r.closeSlot(r.rng.IntN(len(r.files[0])))
		return
	}
	name, perm := r.name(), r.perm()
	flag := accModes[r.rng.IntN(3)]
	for _, f := range []int{os.O_CREATE, os.O_EXCL, os.O_TRUNC, os.O_APPEND} {
		if r.rng.IntN(3) == 0 {
			flag |= f
		}
	}
	if flag&os.O_CREATE != 0 && r.danglingCreate(name) {
		return // documented passthrough limit
	}
	res := make([]diffFile, len(r.impls))
	r.each(fmt.Sprintf("OpenFile(%s, %#x, %v)", name, flag, perm), func(i int, x diffFS) string {
		f, err := x.OpenFile(name, flag, perm)
		res[i] = f
		if err != nil {
			return describe(r.roots[i], err)
		}
		return describe(r.roots[i], f.Name())
	})
	if res[0] == nil {
		return
	}
	fi, err := res[0].Stat()
	if err != nil {
		r.fail("stat of an open file: " + err.Error())
	}
	for i := range r.impls {
		r.files[i] = append(r.files[i], res[i])
	}
	r.isDir = append(r.isDir, fi.IsDir())
	r.append = append(r.append, flag&os.O_APPEND != 0)
}

func (r *diffRun) closeSlot(s int) {
	r.each(fmt.Sprintf("file[%d].Close()", s), func(i int, x diffFS) string { return describe(r.roots[i], r.files[i][s].Close()) })
	for i := range r.impls {
		r.files[i] = slices.Delete(r.files[i], s, s+1)
	}
	r.isDir = slices.Delete(r.isDir, s, s+1)
	r.append = slices.Delete(r.append, s, s+1)
}

func (r *diffRun) fileOp() {
	if len(r.files[0]) == 0 {
		r.open()
		return
	}
	s := r.rng.IntN(len(r.files[0]))
	d := func(i int, v ...any) string { return describe(r.roots[i], v...) }
	f := func(i int) diffFile { return r.files[i][s] }
	pre := fmt.Sprintf("file[%d]", s)
	switch op := r.rng.IntN(12); op {
	case 0, 1:
		n := 1 + r.rng.IntN(40)
		r.each(fmt.Sprintf("%s.Read(%d)", pre, n), func(i int, x diffFS) string {
			buf := make([]byte, n)
			m, err := f(i).Read(buf)
			return d(i, m, buf[:m], err)
		})
	case 2:
		n, off := 1+r.rng.IntN(40), int64(r.rng.IntN(120))
		r.each(fmt.Sprintf("%s.ReadAt(%d, %d)", pre, n, off), func(i int, x diffFS) string {
			buf := make([]byte, n)
			m, err := f(i).ReadAt(buf, off)
			return d(i, m, buf[:m], err)
		})
	case 3, 4:
		data := r.data()
		r.each(fmt.Sprintf("%s.Write(%q)", pre, data), func(i int, x diffFS) string { m, err := f(i).Write(data); return d(i, m, err) })
		if r.append[s] {
			// fslib learns the offset an O_APPEND write leaves only when it is next
			// needed (documented): pin it now, before another handle changes the
			// file's size, and check it is Linux's.
			r.each(pre+".Seek(0, 1) after append", func(i int, x diffFS) string {
				pos, err := f(i).Seek(0, io.SeekCurrent)
				return d(i, pos, err)
			})
		}
	case 5:
		data, off := r.data(), int64(r.rng.IntN(120))
		if len(data) == 0 {
			data = []byte("z")
		}
		r.each(fmt.Sprintf("%s.WriteAt(%q, %d)", pre, data, off), func(i int, x diffFS) string {
			m, err := f(i).WriteAt(data, off)
			return d(i, m, err)
		})
	case 6, 7:
		if r.isDir[s] {
			return
		}
		off, whence := int64(r.rng.IntN(140)-20), r.rng.IntN(3)
		r.each(fmt.Sprintf("%s.Seek(%d, %d)", pre, off, whence), func(i int, x diffFS) string {
			pos, err := f(i).Seek(off, whence)
			return d(i, pos, err)
		})
	case 8:
		r.each(pre+".Stat()", func(i int, x diffFS) string { fi, err := f(i).Stat(); return d(i, fi, err) })
	case 9:
		size := int64(r.rng.IntN(150))
		r.each(fmt.Sprintf("%s.Truncate(%d)", pre, size), func(i int, x diffFS) string { return d(i, f(i).Truncate(size)) })
	case 10:
		r.each(pre+".Sync()", func(i int, x diffFS) string { return d(i, f(i).Sync()) })
	case 11:
		if r.rng.IntN(2) == 0 {
			r.closeSlot(s)
			return
		}
		// Close without forgetting the slot: later operations see a closed file.
		r.each(pre+".Close() (kept)", func(i int, x diffFS) string { return d(i, f(i).Close()) })
	}
}

// listDir opens a directory and reads it to the end in batches: batch sizes and
// the set of entries must match (os returns directory order, fslib sorted).
func (r *diffRun) listDir() {
	name := r.name()
	n := []int{-1, 1, 2, 3}[r.rng.IntN(4)]
	r.each(fmt.Sprintf("list(%s, %d)", name, n), func(i int, x diffFS) string {
		f, err := x.OpenFile(name, os.O_RDONLY, 0)
		if err != nil {
			return describe(r.roots[i], err)
		}
		defer f.Close()
		var sizes []int
		var all []fs.DirEntry
		for {
			ents, err := f.ReadDir(n)
			sizes = append(sizes, len(ents))
			all = append(all, ents...)
			if err != nil || n <= 0 {
				slices.SortFunc(all, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
				return describe(r.roots[i], sizes, all, err)
			}
		}
	})
}

// compareTrees walks every implementation and compares names, types, perms,
// sizes, contents and link targets.
func (r *diffRun) compareTrees() {
	var walk func(i int, x diffFS, dir string, out *strings.Builder)
	walk = func(i int, x diffFS, dir string, out *strings.Builder) {
		ents, err := x.ReadDir(dir)
		if err != nil {
			r.fail("walk " + dir + ": " + err.Error())
		}
		for _, e := range ents {
			p := e.Name()
			if dir != "." {
				p = dir + "/" + p
			}
			fi, err := x.Lstat(p)
			if err != nil {
				r.fail("walk lstat " + p + ": " + err.Error())
			}
			fmt.Fprintf(out, "%s %v", p, fi.Mode())
			switch {
			case fi.IsDir():
				out.WriteString("\n")
				walk(i, x, p, out)
			case fi.Mode()&fs.ModeSymlink != 0:
				t, _ := x.Readlink(p)
				fmt.Fprintf(out, " -> %s\n", t)
			default:
				b, err := x.ReadFile(p)
				fmt.Fprintf(out, " %q %v\n", b, err)
			}
		}
	}
	var ref strings.Builder
	walk(0, r.impls[0], ".", &ref)
	for i := 1; i < len(r.impls); i++ {
		var got strings.Builder
		walk(i, r.impls[i], ".", &got)
		if got.String() != ref.String() {
			r.fail(fmt.Sprintf("final trees differ: %s\n%s\nos\n%s", r.names[i], got.String(), ref.String()))
		}
	}
}

func TestDifferential(t *testing.T) {
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	var perms []fs.FileMode
	for _, p := range []fs.FileMode{0o755, 0o644, 0o700, 0o600, 0o750, 0o640, 0o777, 0o666, 0o711} {
		if uint32(p)&uint32(umask) == 0 {
			perms = append(perms, p)
		}
	}
	steps := 1500
	if testing.Short() {
		steps = 300
	}
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			osRoot := t.TempDir()
			mem := fslib.New(memfs.New(memfs.Options{}))
			pt := fslib.New(newPassthrough(t))
			t.Cleanup(func() { mem.Close(); pt.Close() })
			r := &diffRun{
				t:     t,
				rng:   rand.New(rand.NewPCG(seed, 0x5eed)),
				roots: []string{osRoot, "", ""},
				impls: []diffFS{osFS{osRoot}, clientFS{pt}, clientFS{mem}},
				names: []string{"os", "fslib/passthrough", "fslib/memfs"},
				files: make([][]diffFile, 3),
				perms: perms,
			}
			for range steps {
				r.step()
			}
			for len(r.files[0]) > 0 {
				r.closeSlot(0)
			}
			r.compareTrees()
		})
	}
}
