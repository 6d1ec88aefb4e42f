// Package union is a libservices.FS with OverlayFS semantics over one writable
// upper branch and read-only lower branches: the merged namespace shows, for each
// name, the entry of the topmost branch that has it; directories present in
// several branches are merged.
//
// What it is:
//
//   - Copy-up: the first modification of a file or directory found only in a lower
//     branch (open for writing, truncate, setattr, xattr changes, link, rename)
//     copies it, and the directories above it, into the upper branch, with its mode,
//     owner, times, extended attributes and data (holes stay holes). The copy is
//     made under a hidden temporary name and renamed into place, so a crash leaves
//     either no copy or a whole one. Hard links between lower files are broken by
//     copy-up, as in OverlayFS without its index feature.
//   - Whiteouts and opaque directories use the OCI image-layer (and aufs)
//     representation, which every FS can store: a name X removed from the merged
//     view is an empty file ".wh.X" in the upper directory; a directory whose lower
//     contents are hidden holds an empty file ".wh..wh..opq". OverlayFS's 0/0
//     character devices cannot be created without privilege on every FS; this
//     representation also means lower branches unpacked from OCI layer tarballs keep
//     their whiteouts as they are. Names beginning with ".wh." are reserved: they
//     never appear in the merged view and creating one is EINVAL. A whiteout needs
//     4 more bytes than the name, so removing a lower name longer than 251 bytes is
//     ENAMETOOLONG.
//   - Renaming a directory that has lower contents is EXDEV, as OverlayFS without
//     redirect_dir: applications (mv, rename(1)) then copy and delete. Directories
//     that exist only in the upper branch rename normally, and a directory renamed
//     over a merged one is made opaque.
//   - Symbolic links are resolved in the merged namespace, so a link in a lower
//     branch may point at a file in the upper one.
//   - Inode numbers are the branch's: a file's Ino changes when it is copied up.
//     A handle opened for reading before a copy-up keeps reading the lower copy.
//   - A marker ".wh..wh..opq" at the root of a branch is ignored.
//
// # Merge state: what union caches, for how long
//
// Paths are resolved once, over merge state that union keeps per directory of
// the merged view (dirState): the branches that hold the directory, cut at an
// opaque marker, and for every name its branches hold: the topmost branch that
// shows it and its file type, the branches where a directory of that name
// merges, whether the upper branch holds its whiteout, and whether a lower
// branch shows it (so that removing it needs a whiteout). A state is built at
// the first lookup in the directory by listing it in each branch (ReadDir), and
// union keeps it coherent with its own changes: each create, removal, rename and
// copy-up updates the entries it changed. A lookup of a known name then costs
// only the call the operation itself needs in the branch that holds it (Lstat:
// one Lstat; open: one Open); a create in a directory already in the upper
// branch makes no probe, drops no whiteout that is not there and copies nothing
// up.
//
// Attributes and data are never cached here (a cache layer above does that):
// every Lstat, Open and Readlink goes to the branch, which verifies the state as
// a side effect. When the branch disagrees (the name is gone, or has another
// type) and no change of this union explains it, the directory's state is
// dropped and the operation runs again over a fresh listing (at most three
// times).
//
// Something other than this stack may change the branches: the host adds or
// removes a file in a lower branch. Like an NFS client's attribute cache, union
// then shows the old merge for at most Options.DirCacheTimeout (yaml
// dir_cache_timeout, default 1s) after the state was built: a state older than
// that is rebuilt by listing the directory again at its next use. A name the
// host removes is noticed at once by the call that reaches it; a name the host
// adds, or a whiteout or opaque marker it writes, within the timeout. A timeout
// of 0 keeps no state: every lookup asks the branches for each component (Lstat
// of the name, its whiteout and opaque markers), as union did before it kept
// state.
//
// Memory is bounded: at most Options.MaxDirs directory states (yaml max_dirs,
// default 4096) and Options.MaxNames names across them (yaml max_names,
// default 262144), the least recently used dropped first; a directory holding
// more than an eighth of MaxNames names is not listed again until its timeout
// passes, and its lookups probe the branches.
//
// # Invariants
//
// The upper branch never holds both a name and its whiteout after an operation
// completes; copies under a temporary name are never visible. A directory's
// state is built, and changed, only under that directory's lock, so a listing
// never interleaves with a change this union makes to the directory; a state
// is kept only if no directory was removed, renamed or copied up while it was
// listed (an epoch counter), and the state of a removed or renamed directory,
// and of everything below it, is dropped.
//
// # Concurrency and lock order
//
// No lock is held across branch I/O but the per-directory locks, which order
// the changes of one directory (a create, unlink, copy-up, rename into or out
// of it, and the listing that builds its state) like the kernel's lock on a
// parent directory. Changes in different directories run in parallel; lookups
// over a usable state take no per-directory lock. The locks are
// striped by a hash of the path (FS.locks), so two directories may share one.
// Order:
//
//  1. Directory locks (FS.locks): one at a time, except Rename and Rmdir,
//     which take the locks of the directories they change (both parents, the
//     directory removed, moved or replaced) together, in stripe order
//     (lockDirs). A change resolves its path before taking any lock, then reads
//     the final name again under the lock; copy-up of the directories above
//     happens before, each under its own parent's lock.
//  2. FS.stateMu (the map of states, the LRU, the epoch), held briefly, never
//     across I/O.
//  3. dirState.mu (the names of one state), held briefly, innermost.
//
// Data operations on handles take no lock.
//
// Measure: `go test ./libservices/union -run TestBranchCalls -v` prints the
// calls union makes into its branches per operation; `go test
// ./libservices/union -run '^$' -bench .` times Lstat, open-close and
// create-unlink over two passthrough branches; `polytropon perf stack` (the
// default stack, a cache over a union, in process beside the kernel) and
// `polytropon perf paths` (the same stack through each path).
package union

import (
	lru "container/list"
	"errors"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

const (
	whPrefix  = ".wh."
	opaqueTag = ".wh..wh..opq"
	tmpPrefix = ".wh..wh..tmp."
)

// Defaults of Options.
const (
	DefaultDirCacheTimeout = time.Second
	DefaultMaxDirs         = 4096
	DefaultMaxNames        = 1 << 18
	maxDirCacheTimeout     = time.Hour
)

// Options configure a union.
type Options struct {
	// DirCacheTimeout is how long a directory's merge state is used before it
	// is listed again, e.g. "500ms": the longest a change made beside this
	// stack in a branch may stay unseen. nil means DefaultDirCacheTimeout; 0
	// keeps no state. At most 1h.
	DirCacheTimeout *libservices.Duration `yaml:"dir_cache_timeout"`
	// MaxDirs is the most directory states kept; 0 means DefaultMaxDirs.
	MaxDirs int `yaml:"max_dirs"`
	// MaxNames is the most names kept across the states; 0 means
	// DefaultMaxNames.
	MaxNames int `yaml:"max_names"`
}

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	if t := o.DirCacheTimeout; t != nil && (*t < 0 || time.Duration(*t) > maxDirCacheTimeout) {
		return errors.New("dir_cache_timeout: must be between 0 (keep no state) and 1h, e.g. 1s")
	}
	if o.MaxDirs < 0 {
		return errors.New("max_dirs: must not be negative (0 means 4096)")
	}
	if o.MaxNames < 0 {
		return errors.New("max_names: must not be negative (0 means 262144)")
	}
	return nil
}

func init() {
	libservices.Register("union", libservices.Multi, func(o *Options, inner []libservices.FS, _ *libservices.Env) (libservices.FS, error) {
		return NewWithOptions(*o, inner[0], inner[1:]...)
	})
}

// FS is a union of branches.
type FS struct {
	layers    []libservices.FS // upper first
	all       []int            // the root's branches: all of them
	holdsBack bool             // some branch is a Flusher that holds data back
	tmpSeq    atomic.Uint64
	reshapes  atomic.Uint64 // directories copied up (libservices.Reshaper)

	timeout     time.Duration
	maxDirs     int
	maxNames    int
	maxDirNames int
	clock       func() int64 // monotonic nanoseconds; tests replace it
	seed        maphash.Seed

	// locks are the per-directory locks (see the package doc), striped.
	locks [64]sync.Mutex

	// stateMu guards the fields below.
	stateMu   sync.Mutex
	states    map[string]*dirState // by canonical path
	lru       lru.List             // of *dirState, most recently used first
	names     int                  // sum of the states' sizes
	epoch     uint64               // moves when a directory is removed, renamed or copied up
	evictions uint64
}

var (
	_ libservices.FS       = (*FS)(nil)
	_ libservices.Flusher  = (*FS)(nil)
	_ libservices.Reshaper = (*FS)(nil)
)

// New returns a union of upper (writable) over lowers (read-only; the first one
// is the topmost) with the default Options. Lowers are never modified.
func New(upper libservices.FS, lowers ...libservices.FS) *FS {
	f, err := NewWithOptions(Options{}, upper, lowers...)
	if err != nil {
		panic(err) // the default options are valid
	}
	return f
}

// NewWithOptions is New with options.
func NewWithOptions(o Options, upper libservices.FS, lowers ...libservices.FS) (*FS, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	f := &FS{
		layers:   append([]libservices.FS{upper}, lowers...),
		timeout:  DefaultDirCacheTimeout,
		maxDirs:  DefaultMaxDirs,
		maxNames: DefaultMaxNames,
		clock:    monotonic(),
		seed:     maphash.MakeSeed(),
		states:   map[string]*dirState{},
	}
	if o.DirCacheTimeout != nil {
		f.timeout = time.Duration(*o.DirCacheTimeout)
	}
	if o.MaxDirs > 0 {
		f.maxDirs = o.MaxDirs
	}
	if o.MaxNames > 0 {
		f.maxNames = o.MaxNames
	}
	f.maxDirNames = max(f.maxNames/8, 1)
	for i, l := range f.layers {
		f.all = append(f.all, i)
		if fl, ok := l.(libservices.Flusher); ok && fl.HoldsBack() {
			f.holdsBack = true
		}
	}
	return f, nil
}

// HoldsBack implements libservices.Flusher: whether any branch does.
func (f *FS) HoldsBack() bool { return f.holdsBack }

// Unwrap implements libservices.MultiWrapper: the upper branch first.
func (f *FS) Unwrap() []libservices.FS { return append([]libservices.FS(nil), f.layers...) }

// Reshapes implements libservices.Reshaper: the directories copied up so far,
// plus what the branches report; unknown when a branch cannot say.
func (f *FS) Reshapes() (uint64, bool) {
	n := f.reshapes.Load()
	for _, l := range f.layers {
		r, ok := l.(libservices.Reshaper)
		if !ok {
			return 0, false
		}
		c, known := r.Reshapes()
		if !known {
			return 0, false
		}
		n += c
	}
	return n, true
}

// Counters implements libservices.CounterReporter.
func (f *FS) Counters(fn func(name string, value int64)) {
	f.stateMu.Lock()
	dirs, names, ev := f.lru.Len(), f.names, f.evictions
	f.stateMu.Unlock()
	fn("union_dir_states", int64(dirs))
	fn("union_dir_state_names", int64(names))
	fn("union_dir_state_evictions", int64(ev))
}

// CloseFS implements libservices.Closer, closing every branch.
func (f *FS) CloseFS() error {
	var first error
	for _, l := range f.layers {
		if c, ok := l.(libservices.Closer); ok {
			if err := c.CloseFS(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// node is the result of a lookup.
type node struct {
	parent dirRef
	base   string // "" for the root, or a directory reached by ".." or "/"
	path   string
	ent    nameEnt // ent.layer: topmost branch holding it; -1 if only the final name is missing
	seq    uint64  // parent.st's seq when ent was read
}

func (n *node) exists() bool { return n.ent.exists() }
func (n *node) layer() int   { return n.ent.layer }

func reserved(name string) bool { return strings.HasPrefix(name, whPrefix) }

func (f *FS) has(li int, p string) (bool, error) {
	var a libservices.Attr
	err := f.layers[li].Lstat(p, &a)
	switch err {
	case nil:
		return true, nil
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ENAMETOOLONG:
		// ENAMETOOLONG: the whiteout of a name longer than 251 bytes cannot exist.
		return false, nil
	}
	return false, err
}

// retryErr is a result that a stale state or a racing change explains: the
// operation runs again over fresh state (do), at most maxTries times, and then
// fails with errno. progress marks a step of the operation itself (it copied
// a directory or a file up, and looks again): those have a bound of their own,
// maxSteps, as deep as copy-up can need for one rename.
type retryErr struct {
	errno    syscall.Errno
	progress bool
}

func (e retryErr) Error() string { return "union: stale merge state: " + e.errno.Error() }

const (
	maxTries = 3
	maxSteps = 8
)

// again is the retryErr of an operation that made progress.
var again = retryErr{errno: syscall.ENOENT, progress: true}

// do runs op until it succeeds, fails for good, or ran out of tries.
func (f *FS) do(op func() error) error {
	tries, steps := 0, 0
	for {
		err := op()
		r, ok := err.(retryErr)
		if !ok {
			return err
		}
		if r.progress {
			steps++
		} else {
			tries++
		}
		if tries == maxTries || steps == maxSteps {
			return r.errno
		}
	}
}

// branchGone reports whether a branch's error for a name the state showed
// means the state is stale.
func branchGone(err error) bool {
	return err == syscall.ENOENT || err == syscall.ENOTDIR
}

// disagree is the error of an operation whose branch contradicted the state of
// r: the state is dropped unless a change of this union explains it, and the
// operation runs again.
func (f *FS) disagree(r dirRef, seq uint64, err error) error {
	if r.st == nil {
		return err
	}
	f.stale(r, seq)
	return retryErr{errno: err.(syscall.Errno)}
}

// lookup resolves a path in the merged view, following symlinks in the merged
// namespace; follow says whether a final symlink is followed.
func (f *FS) lookup(name string, follow bool) (*node, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	root, err := f.dir(".", f.all)
	if err != nil {
		return nil, err
	}
	stack := []dirRef{root}
	var comps []string
	if clean != "." {
		comps = strings.Split(clean, "/")
	}
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		cur := stack[len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		last := len(comps) == 0
		e, seq, err := f.child(cur, c, false)
		if err != nil {
			return nil, err
		}
		p := libservices.Join(cur.path, c)
		if !e.exists() {
			if last {
				return &node{parent: cur, base: c, path: p, ent: e, seq: seq}, nil
			}
			return nil, syscall.ENOENT
		}
		if e.isLink() && (!last || follow) {
			links++
			if links > libservices.MaxSymlinks {
				return nil, syscall.ELOOP
			}
			target, err := f.layers[e.layer].Readlink(p)
			if err != nil {
				if branchGone(err) || err == syscall.EINVAL {
					return nil, f.disagree(cur, seq, syscall.ENOENT)
				}
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			tc := strings.Split(target, "/")
			if last && strings.HasSuffix(target, "/") {
				tc = append(tc, ".")
			}
			comps = append(tc, comps...)
			continue
		}
		if last {
			return &node{parent: cur, base: c, path: p, ent: e, seq: seq}, nil
		}
		if !e.isDir() {
			return nil, syscall.ENOTDIR
		}
		d, err := f.dir(p, e.dirs)
		if err != nil {
			return nil, err
		}
		stack = append(stack, d)
	}
	// The path named a directory without a final name: the root, or "..".
	d := stack[len(stack)-1]
	return &node{parent: d, path: d.path, ent: nameEnt{layer: d.layers[0], typ: syscall.S_IFDIR, dirs: d.cand}}, nil
}

func (f *FS) get(name string, follow bool) (*node, error) {
	n, err := f.lookup(name, follow)
	if err != nil {
		return nil, err
	}
	if !n.exists() {
		return nil, syscall.ENOENT
	}
	return n, nil
}

// attr fills a from the branch that holds n, checking the state against it.
func (f *FS) attr(n *node, a *libservices.Attr) error {
	err := f.layers[n.layer()].Lstat(n.path, a)
	if n.base == "" {
		return err
	}
	if branchGone(err) {
		return f.disagree(n.parent, n.seq, syscall.ENOENT)
	}
	if err == nil && a.Mode&syscall.S_IFMT != n.ent.typ {
		return f.disagree(n.parent, n.seq, syscall.ENOENT)
	}
	return err
}

// nodeDir returns the directory n names.
func (f *FS) nodeDir(n *node) (dirRef, error) {
	return f.dir(n.path, n.ent.dirs)
}

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error {
	return f.do(func() error {
		n, err := f.get(name, false)
		if err != nil {
			return err
		}
		return f.attr(n, a)
	})
}

// Stat implements libservices.FS.
func (f *FS) Stat(name string, a *libservices.Attr) error {
	return f.do(func() error {
		n, err := f.get(name, true)
		if err != nil {
			return err
		}
		return f.attr(n, a)
	})
}

// Readlink implements libservices.FS.
func (f *FS) Readlink(name string) (target string, err error) {
	err = f.do(func() error {
		n, err := f.get(name, false)
		if err != nil {
			return err
		}
		if n.base == "" || !n.ent.isLink() {
			return syscall.EINVAL
		}
		target, err = f.layers[n.layer()].Readlink(n.path)
		if branchGone(err) || err == syscall.EINVAL {
			return f.disagree(n.parent, n.seq, err.(syscall.Errno))
		}
		return err
	})
	return target, err
}

// mergedEntries lists a merged directory, hiding whiteouts and what they hide.
func (f *FS) mergedEntries(d dirRef) ([]libservices.DirEntry, error) {
	var out []libservices.DirEntry
	seen := map[string]bool{}
	hidden := map[string]bool{}
	for _, li := range d.layers {
		ents, err := f.layers[li].ReadDir(d.path)
		if err != nil {
			return nil, err
		}
		var whiteouts []string
		for _, e := range ents {
			if reserved(e.Name) {
				if e.Name != opaqueTag && !strings.HasPrefix(e.Name, tmpPrefix) {
					whiteouts = append(whiteouts, e.Name[len(whPrefix):])
				}
				continue
			}
			if seen[e.Name] || hidden[e.Name] {
				continue
			}
			seen[e.Name] = true
			out = append(out, e)
		}
		for _, w := range whiteouts {
			hidden[w] = true
		}
	}
	return out, nil
}

// ReadDir implements libservices.FS. It lists the branches each time (the
// entries' inode numbers are not part of the merge state).
func (f *FS) ReadDir(name string) (out []libservices.DirEntry, err error) {
	err = f.do(func() error {
		n, err := f.get(name, true)
		if err != nil {
			return err
		}
		if !n.ent.isDir() {
			return syscall.ENOTDIR
		}
		d, err := f.nodeDir(n)
		if err != nil {
			return err
		}
		out, err = f.mergedEntries(d)
		if branchGone(err) && n.base != "" {
			return f.disagree(n.parent, n.seq, err.(syscall.Errno))
		}
		return err
	})
	return out, err
}

// Statfs implements libservices.FS: the upper branch's, where new data goes.
func (f *FS) Statfs(st *libservices.Statfs) error { return f.layers[0].Statfs(st) }

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (sz int, err error) {
	err = f.do(func() error {
		n, err := f.get(name, true)
		if err != nil {
			return err
		}
		sz, err = f.layers[n.layer()].Getxattr(n.path, attr, dest)
		if branchGone(err) && n.base != "" {
			return f.disagree(n.parent, n.seq, err.(syscall.Errno))
		}
		return err
	})
	return sz, err
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) (out []string, err error) {
	err = f.do(func() error {
		n, err := f.get(name, true)
		if err != nil {
			return err
		}
		out, err = f.layers[n.layer()].Listxattr(n.path)
		if branchGone(err) && n.base != "" {
			return f.disagree(n.parent, n.seq, err.(syscall.Errno))
		}
		return err
	})
	return out, err
}

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	return f.do(func() error {
		n, err := f.upNode(name, true, nil)
		if err != nil {
			return err
		}
		return f.upperCall(n, f.layers[0].Setxattr(n.path, attr, data, flags))
	})
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	return f.do(func() error {
		n, err := f.upNode(name, true, func(n *node) error {
			// ENODATA must not cost a copy-up.
			_, err := f.layers[n.layer()].Getxattr(n.path, attr, nil)
			return err
		})
		if err != nil {
			return err
		}
		return f.upperCall(n, f.layers[0].Removexattr(n.path, attr))
	})
}

// Setattr implements libservices.FS.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	return f.do(func() error {
		n, err := f.upNode(name, true, func(n *node) error {
			if sa.Valid&libservices.SetSize != 0 {
				if n.ent.isDir() {
					return syscall.EISDIR
				}
				if sa.Size < 0 {
					return syscall.EINVAL
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return f.upperCall(n, f.layers[0].Setattr(n.path, sa))
	})
}

// upperCall is the result of a call on n in the upper branch: a name that is
// gone there means the state was stale, or a change raced; look again.
func (f *FS) upperCall(n *node, err error) error {
	if branchGone(err) && n.base != "" {
		return f.disagree(n.parent, n.seq, err.(syscall.Errno))
	}
	return err
}
