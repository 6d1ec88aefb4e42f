package access

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// Options configure a Checker.
type Options struct {
	// Protected replaces the host's fs.protected_* values when non-nil (tests of
	// the rules); nil reads them from /proc/sys/fs once, in New.
	Protected *Protected
	// Dirs is the number of slots of the directory memo (rounded up to a power
	// of two; 0 means DefaultDirs).
	Dirs int
	// NoMemo resolves every path completely on every call, remembering nothing:
	// for an FS that other processes change behind this one's back (an instance
	// reached over the direct path, as `polytropon mount` does).
	NoMemo bool
	// Unchecked sends every call straight to the FS with no check at all. It
	// exists only as the baseline of the checks' benchmarks; a service never
	// sets it.
	Unchecked bool
}

// DefaultDirs is the default number of directory memo slots.
const DefaultDirs = 4096

// Checker applies the kernel's permission rules to the calls of one caller at a
// time on an FS (see the package doc).
type Checker struct {
	fs libservices.FS
	rs libservices.Reshaper // fs's, or nil: every create or unlink may reshape
	// cannotGive is set once the FS refused to give a new file to another
	// uid (EPERM: no CAP_CHOWN), so that later creates do not ask again.
	cannotGive *atomic.Bool
	prot       Protected
	protErr    error
	memo       *memo // nil: no memo
	walked     bool  // the caller walked the path itself (FUSE): see Walked
	unchecked  bool
	parent     *Checker // the Checker Walked was called on, or nil
}

// generation is bumped after every change that may alter a directory's mode,
// owner or name, or a file's set-ID bits, made through any Checker of this
// process; what the directory memo and File remember is valid only for the
// generation they were taken at. It starts at 1 so that a zero value never
// matches.
var generation atomic.Uint64

func init() { generation.Store(1) }

// changed invalidates what every Checker of the process remembers.
func changed() { generation.Add(1) }

// linkGen is the generation of the latest walk that followed a symbolic link
// (set before the link is read): while it equals the current generation, some
// remembered walk may go through a link, and removing any name may invalidate
// it. Removing a name nothing remembered walked through changes no directory.
var linkGen atomic.Uint64

// shape is the FS's reshape count before a call that creates a name or
// removes a non-directory (known false: the FS cannot say).
func (c *Checker) shape() (count uint64, known bool) {
	if c.rs == nil {
		return 0, false
	}
	return c.rs.Reshapes()
}

// settle ends such a call: what is remembered stays valid, unless the FS
// changed directories as a side effect meanwhile (a union's copy-up: shape
// moved, or cannot be told) or, for a removal, a walk remembered at gen (the
// generation before the call) may have followed a link of the removed name.
// A new name is no directory anyone walked through (a walk that failed on it
// is not remembered); a regular file, link or device is in no remembered
// chain of directory attributes.
func (c *Checker) settle(before uint64, known, removed bool, gen uint64) {
	if !known {
		changed()
		return
	}
	if n, ok := c.rs.Reshapes(); !ok || n != before {
		changed()
		return
	}
	if removed && linkGen.Load() >= gen {
		changed()
	}
}

// Invalidate forgets what every Checker of this process remembers about
// directories and set-ID bits, for a change made behind their back (on the
// host, under a branch).
func Invalidate() { changed() }

// New returns a Checker over fsys. It reads the host's fs.protected_* sysctls
// unless o.Protected is given; when they cannot be read it takes Strictest and
// reports why through ProtectedErr.
func New(fsys libservices.FS, o Options) *Checker {
	c := &Checker{fs: fsys, unchecked: o.Unchecked, cannotGive: new(atomic.Bool)}
	c.rs, _ = fsys.(libservices.Reshaper)
	if o.Protected != nil {
		c.prot = *o.Protected
	} else {
		c.prot, c.protErr = ReadProtected()
	}
	if !o.NoMemo {
		n := o.Dirs
		if n <= 0 {
			n = DefaultDirs
		}
		size := 1
		for size < n {
			size <<= 1
		}
		c.memo = &memo{seed: maphash.MakeSeed(), slots: make([]atomic.Pointer[dirEntry], size), mask: uint64(size - 1)}
	}
	return c
}

// FS returns the FS the Checker guards.
func (c *Checker) FS() libservices.FS { return c.fs }

// Protected returns the fs.protected_* values the Checker applies.
func (c *Checker) Protected() Protected { return c.prot }

// ProtectedErr is why the host's fs.protected_* values could not be read (nil
// when they were, or were given).
func (c *Checker) ProtectedErr() error { return c.protErr }

// Walked returns a Checker with the same rules for a caller that resolved every
// path itself, with the kernel's checks, before asking: a FUSE kernel with
// default_permissions, whose requests name files by the node it reached (a
// process whose working directory is below a directory it may no longer search
// still reaches it). Its calls check no search permission on the directories
// above the file, follow no final symbolic link (ELOOP: the kernel follows
// links itself), and accept from anyone a mode change that only clears set-ID
// bits (the kernel sends those after a write, truncate or chown by a non-owner,
// having checked the change itself).
func (c *Checker) Walked() *Checker {
	w := *c
	w.walked = true
	w.memo = nil
	w.parent = c
	return &w
}

// memo remembers, per directory path as asked, where it resolves to and every
// directory searched on the way: a direct-mapped table of immutable entries,
// read without a lock.
type memo struct {
	seed  maphash.Seed
	slots []atomic.Pointer[dirEntry]
	mask  uint64
}

type dirEntry struct {
	path     string // the directory, clean, as asked
	resolved string // the same with every symbolic link resolved
	gen      uint64 // generation when the walk started
	chain    []perm // each directory searched, in order; the last is the directory itself
}

func (m *memo) get(path string, gen uint64) *dirEntry {
	e := m.slots[maphash.String(m.seed, path)&m.mask].Load()
	if e == nil || e.gen != gen || e.path != path {
		return nil
	}
	return e
}

func (m *memo) put(e *dirEntry) {
	m.slots[maphash.String(m.seed, e.path)&m.mask].Store(e)
}

// rejoin is the path of base in directory dir (of clean) once dir resolved to
// rdir: clean itself when no symbolic link was involved, without allocating.
func rejoin(rdir, dir, clean, base string) string {
	if rdir == dir {
		return clean
	}
	return libservices.Join(rdir, base)
}

// resolveDir resolves the clean directory path dir for cr: every component
// looked up in order, directory symbolic links followed inside the FS (clamped
// at its root), search permission needed on every directory looked into
// (EACCES before any later error, as the kernel's walk). It returns the
// resolved path and the directory's own attributes.
func (c *Checker) resolveDir(cr *Cred, dir string) (string, perm, error) {
	if c.walked {
		var a libservices.Attr
		if err := c.fs.Lstat(dir, &a); err != nil {
			return "", perm{}, err
		}
		if !a.IsDir() {
			return "", perm{}, syscall.ENOTDIR
		}
		return dir, permOf(&a), nil
	}
	gen := generation.Load()
	if c.memo != nil {
		if e := c.memo.get(dir, gen); e != nil {
			if !searchable(cr, e.chain) {
				return "", perm{}, syscall.EACCES
			}
			return e.resolved, e.chain[len(e.chain)-1], nil
		}
	}
	w := walker{fs: c.fs, gen: gen}
	err := w.start(".")
	if err == nil {
		err = w.walk(dir)
	}
	if len(w.chain) > 0 && !searchable(cr, w.chain) {
		return "", perm{}, syscall.EACCES
	}
	if err != nil {
		return "", perm{}, err
	}
	if c.memo != nil {
		c.memo.put(&dirEntry{path: dir, resolved: w.cur, gen: gen, chain: w.chain})
	}
	return w.cur, w.chain[len(w.chain)-1], nil
}

// walker resolves directory components (link_path_walk) and records each
// directory it enters, whose search permission the caller needs.
type walker struct {
	fs    libservices.FS
	gen   uint64 // the generation the walk started at
	cur   string // resolved path of the current directory
	chain []perm
	links int
}

// start enters the resolved directory p.
func (w *walker) start(p string) error {
	var a libservices.Attr
	if err := w.fs.Lstat(p, &a); err != nil {
		return err
	}
	if !a.IsDir() {
		return syscall.ENOTDIR
	}
	w.cur = p
	w.chain = append(w.chain, permOf(&a))
	return nil
}

// walk enters every component of path in turn; each must be (or lead through
// symbolic links to) a directory.
func (w *walker) walk(path string) error {
	for path != "" {
		var comp string
		if i := strings.IndexByte(path, '/'); i >= 0 {
			comp, path = path[:i], path[i+1:]
		} else {
			comp, path = path, ""
		}
		switch {
		case comp == "" || comp == ".":
			continue
		case comp == "..":
			if w.cur == "." {
				continue // clamped at the root, like a chroot
			}
			parent, _ := libservices.Split(w.cur)
			if err := w.start(parent); err != nil {
				return err
			}
			continue
		case len(comp) > libservices.NameMax:
			return syscall.ENAMETOOLONG
		}
		next := libservices.Join(w.cur, comp)
		var a libservices.Attr
		if err := w.fs.Lstat(next, &a); err != nil {
			return err
		}
		switch {
		case a.IsDir():
			w.cur = next
			w.chain = append(w.chain, permOf(&a))
		case a.IsSymlink():
			if err := w.follow(next); err != nil {
				return err
			}
		default:
			return syscall.ENOTDIR
		}
	}
	return nil
}

// follow walks the target of the symbolic link at p, from the root for an
// absolute target, else from the current directory.
func (w *walker) follow(p string) error {
	linkGen.Store(w.gen)
	w.links++
	if w.links > libservices.MaxSymlinks {
		return syscall.ELOOP
	}
	target, err := w.fs.Readlink(p)
	if err != nil {
		return err
	}
	if target == "" {
		return syscall.ENOENT
	}
	if target[0] == '/' {
		if err := w.start("."); err != nil {
			return err
		}
	}
	return w.walk(target)
}

// lookup resolves clean for a call that does not follow a final symbolic
// link: the resolved path of the final name and its directory's attributes.
// Nothing is looked up for the final name.
func (c *Checker) lookup(cr *Cred, clean string) (p string, dir perm, err error) {
	if libservices.IsRoot(clean) {
		var a libservices.Attr
		if err := c.fs.Lstat(".", &a); err != nil {
			return "", perm{}, err
		}
		return ".", permOf(&a), nil
	}
	d, base := libservices.Split(clean)
	rdir, dp, err := c.resolveDir(cr, d)
	if err != nil {
		return "", perm{}, err
	}
	return rejoin(rdir, d, clean, base), dp, nil
}

// lookupFollow resolves clean for a call that follows a final symbolic link
// (stat, open, chmod, xattrs): the resolved path of the file, its attributes in
// a and its directory's. A followed link must pass MayFollowLink, and the
// directories its target leads through need search permission.
func (c *Checker) lookupFollow(cr *Cred, clean string, a *libservices.Attr) (string, perm, error) {
	p, dir, err := c.lookup(cr, clean)
	if err != nil {
		return "", perm{}, err
	}
	if err := c.fs.Lstat(p, a); err != nil {
		return "", perm{}, err
	}
	links := 0
	for a.IsSymlink() {
		if c.walked {
			return "", perm{}, syscall.ELOOP
		}
		if err := mayFollowLink(c.prot, cr, dir, permOf(a)); err != nil {
			return "", perm{}, err
		}
		if p, dir, err = c.followFinal(cr, p, dir, &links); err != nil {
			return "", perm{}, err
		}
		if err := c.fs.Lstat(p, a); err != nil {
			return "", perm{}, err
		}
	}
	return p, dir, nil
}

// followFinal resolves the target of the final symbolic link at p (in the
// directory of attributes dir) to the path of what it names and that path's
// directory.
func (c *Checker) followFinal(cr *Cred, p string, dir perm, links *int) (string, perm, error) {
	*links++
	if *links > libservices.MaxSymlinks {
		return "", perm{}, syscall.ELOOP
	}
	target, err := c.fs.Readlink(p)
	if err != nil {
		return "", perm{}, err
	}
	if target == "" {
		return "", perm{}, syscall.ENOENT
	}
	w := walker{fs: c.fs, links: *links}
	w.cur, _ = libservices.Split(p)
	tdir, tbase := target, ""
	if i := strings.LastIndexByte(target, '/'); i >= 0 {
		tdir, tbase = target[:i+1], target[i+1:]
	} else {
		tdir, tbase = "", target
	}
	if tbase == "." || tbase == ".." {
		tdir, tbase = target, ""
	}
	if len(tbase) > libservices.NameMax {
		return "", perm{}, syscall.ENAMETOOLONG
	}
	if target[0] == '/' {
		err = w.start(".")
	}
	if err == nil {
		err = w.walk(tdir)
	}
	*links = w.links
	if len(w.chain) > 0 && !searchable(cr, w.chain) {
		return "", perm{}, syscall.EACCES
	}
	if err != nil {
		return "", perm{}, err
	}
	if len(w.chain) > 0 {
		dir = w.chain[len(w.chain)-1]
	}
	if tbase == "" {
		// The target names a directory itself ("..", "d/."): what it names is
		// the walk's end, and its own attributes stand for its directory's.
		return w.cur, dir, nil
	}
	return libservices.Join(w.cur, tbase), dir, nil
}
