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
// Invariants: the upper branch never holds both a name and its whiteout after an
// operation completes; copies under a temporary name are never visible.
//
// Lock order: FS.mu alone. Operations that change the namespace or copy up hold it
// exclusively, lookups hold it shared; data operations on handles take no lock.
//
// Measure: `polytropon perf stack` (the default stack, a cache over a union,
// in process beside the kernel) and `polytropon perf paths` (the same stack
// through each path).
package union

import (
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

const (
	whPrefix  = ".wh."
	opaqueTag = ".wh..wh..opq"
	tmpPrefix = ".wh..wh..tmp."
)

// Options configure a union; it has none yet, and rejects any.
type Options struct{}

func init() {
	libservices.Register("union", libservices.Multi, func(_ *Options, inner []libservices.FS, _ *libservices.Env) (libservices.FS, error) {
		return New(inner[0], inner[1:]...), nil
	})
}

// FS is a union of branches.
type FS struct {
	layers    []libservices.FS // upper first
	holdsBack bool             // some branch is a Flusher that holds data back
	tmpSeq    atomic.Uint64
	reshapes  atomic.Uint64 // directories copied up (libservices.Reshaper)

	// mu serialises namespace changes and copy-up against lookups.
	mu sync.RWMutex
}

var (
	_ libservices.FS       = (*FS)(nil)
	_ libservices.Flusher  = (*FS)(nil)
	_ libservices.Reshaper = (*FS)(nil)
)

// New returns a union of upper (writable) over lowers (read-only; the first one
// is the topmost). Lowers are never modified.
func New(upper libservices.FS, lowers ...libservices.FS) *FS {
	f := &FS{layers: append([]libservices.FS{upper}, lowers...)}
	for _, l := range f.layers {
		if fl, ok := l.(libservices.Flusher); ok && fl.HoldsBack() {
			f.holdsBack = true
		}
	}
	return f
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

// dirInfo is a directory of the merged view: its canonical path and the branches
// where it is a directory and merged, top first.
type dirInfo struct {
	path   string
	layers []int
}

// node is the result of a lookup.
type node struct {
	parent dirInfo
	base   string // "" for the root, or a directory reached by ".." or "/"
	path   string
	layer  int // topmost branch holding it; -1 if only the final name is missing
	attr   libservices.Attr
	merged []int // for a directory: the branches merged into it, top first
}

func (n *node) exists() bool { return n.layer >= 0 }

func (f *FS) rootInfo() dirInfo {
	l := make([]int, len(f.layers))
	for i := range l {
		l[i] = i
	}
	return dirInfo{path: ".", layers: l}
}

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

// lookupChild finds base in dir: the topmost branch that has it and, for a
// directory, the branches merged into it.
func (f *FS) lookupChild(dir dirInfo, base string) (layer int, attr libservices.Attr, merged []int, err error) {
	layer = -1
	if reserved(base) {
		return -1, attr, nil, nil
	}
	p := libservices.Join(dir.path, base)
	for _, li := range dir.layers {
		var a libservices.Attr
		err := f.layers[li].Lstat(p, &a)
		if err == nil {
			if layer < 0 {
				layer, attr = li, a
				if !a.IsDir() {
					return layer, attr, nil, nil
				}
				merged = []int{li}
			} else {
				if !a.IsDir() {
					return layer, attr, merged, nil
				}
				merged = append(merged, li)
			}
			opq, err := f.has(li, libservices.Join(p, opaqueTag))
			if err != nil {
				return -1, attr, nil, err
			}
			if opq {
				return layer, attr, merged, nil
			}
			continue
		}
		if err != syscall.ENOENT && err != syscall.ENOTDIR {
			return -1, attr, nil, err
		}
		wh, err := f.has(li, libservices.Join(dir.path, whPrefix+base))
		if err != nil {
			return -1, attr, nil, err
		}
		if wh {
			break
		}
	}
	return layer, attr, merged, nil
}

// lookup resolves a path in the merged view, following symlinks in the merged
// namespace; follow says whether a final symlink is followed.
func (f *FS) lookup(name string, follow bool) (*node, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	root := f.rootInfo()
	stack := []dirInfo{root}
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
		layer, attr, merged, err := f.lookupChild(cur, c)
		if err != nil {
			return nil, err
		}
		if layer < 0 {
			if last {
				return &node{parent: cur, base: c, path: libservices.Join(cur.path, c), layer: -1}, nil
			}
			return nil, syscall.ENOENT
		}
		p := libservices.Join(cur.path, c)
		if attr.IsSymlink() && (!last || follow) {
			links++
			if links > libservices.MaxSymlinks {
				return nil, syscall.ELOOP
			}
			target, err := f.layers[layer].Readlink(p)
			if err != nil {
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
			return &node{parent: cur, base: c, path: p, layer: layer, attr: attr, merged: merged}, nil
		}
		if !attr.IsDir() {
			return nil, syscall.ENOTDIR
		}
		stack = append(stack, dirInfo{path: p, layers: merged})
	}
	// The path named a directory without a final name: the root, or "..".
	d := stack[len(stack)-1]
	n := &node{path: d.path, layer: d.layers[0], merged: d.layers}
	if err := f.layers[n.layer].Lstat(d.path, &n.attr); err != nil {
		return nil, err
	}
	return n, nil
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

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(name, false)
	if err != nil {
		return err
	}
	*a = n.attr
	return nil
}

// Stat implements libservices.FS.
func (f *FS) Stat(name string, a *libservices.Attr) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(name, true)
	if err != nil {
		return err
	}
	*a = n.attr
	return nil
}

// Readlink implements libservices.FS.
func (f *FS) Readlink(name string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(name, false)
	if err != nil {
		return "", err
	}
	if n.base == "" {
		return "", syscall.EINVAL
	}
	return f.layers[n.layer].Readlink(n.path)
}

// mergedEntries lists a merged directory, hiding whiteouts and what they hide.
func (f *FS) mergedEntries(d dirInfo) ([]libservices.DirEntry, error) {
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

// ReadDir implements libservices.FS.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(name, true)
	if err != nil {
		return nil, err
	}
	if !n.attr.IsDir() {
		return nil, syscall.ENOTDIR
	}
	return f.mergedEntries(dirInfo{path: n.path, layers: n.merged})
}

// Statfs implements libservices.FS: the upper branch's, where new data goes.
func (f *FS) Statfs(st *libservices.Statfs) error { return f.layers[0].Statfs(st) }

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(name, true)
	if err != nil {
		return 0, err
	}
	return f.layers[n.layer].Getxattr(n.path, attr, dest)
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.get(name, true)
	if err != nil {
		return nil, err
	}
	return f.layers[n.layer].Listxattr(n.path)
}

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(name, true)
	if err != nil {
		return err
	}
	if err := f.copyUpNode(n); err != nil {
		return err
	}
	return f.layers[0].Setxattr(n.path, attr, data, flags)
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(name, true)
	if err != nil {
		return err
	}
	// ENODATA must not cost a copy-up.
	if _, err := f.layers[n.layer].Getxattr(n.path, attr, nil); err != nil {
		return err
	}
	if err := f.copyUpNode(n); err != nil {
		return err
	}
	return f.layers[0].Removexattr(n.path, attr)
}

// Setattr implements libservices.FS.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(name, true)
	if err != nil {
		return err
	}
	if sa.Valid&libservices.SetSize != 0 {
		if n.attr.IsDir() {
			return syscall.EISDIR
		}
		if sa.Size < 0 {
			return syscall.EINVAL
		}
	}
	if err := f.copyUpNode(n); err != nil {
		return err
	}
	return f.layers[0].Setattr(n.path, sa)
}
