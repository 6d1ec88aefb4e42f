package union

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// copyChunk is the unit of data copy-up; chunks that read as all zeros are
// skipped so that holes stay holes.
const copyChunk = 128 << 10

var zeroChunk [copyChunk]byte

func (f *FS) tmpName(dir string) string {
	return libservices.Join(dir, tmpPrefix+strconv.FormatUint(f.tmpSeq.Add(1), 10))
}

// copyMeta copies owner, times and extended attributes from src (a lower branch)
// to the upper file at p. Mode is set at creation.
func (f *FS) copyMeta(src libservices.FS, srcPath string, a *libservices.Attr, p string, symlink bool) error {
	up := f.layers[0]
	if !symlink {
		if err := up.Setattr(p, &libservices.SetAttr{Valid: libservices.SetUid | libservices.SetGid, Uid: a.Uid, Gid: a.Gid}); err != nil && err != syscall.EPERM {
			return err
		}
		// chown may clear set-id bits; restore the mode.
		if err := up.Setattr(p, &libservices.SetAttr{Valid: libservices.SetMode, Mode: a.Mode & 0o7777}); err != nil {
			return err
		}
		names, err := src.Listxattr(srcPath)
		if err != nil && err != syscall.EOPNOTSUPP {
			return err
		}
		for _, x := range names {
			sz, err := src.Getxattr(srcPath, x, nil)
			if err != nil {
				continue // vanished, or a namespace we may not read
			}
			buf := make([]byte, sz)
			sz, err = src.Getxattr(srcPath, x, buf)
			if err != nil {
				continue
			}
			if err := up.Setxattr(p, x, buf[:sz], 0); err != nil && err != syscall.EOPNOTSUPP && err != syscall.EPERM {
				return err
			}
		}
		return up.Setattr(p, &libservices.SetAttr{Valid: libservices.SetAtime | libservices.SetMtime, Atime: a.Atime, Mtime: a.Mtime})
	}
	return nil
}

// copyUpDir makes sure every directory of the canonical path dir exists in the
// upper branch.
func (f *FS) copyUpDir(dir string) error {
	if dir == "." {
		return nil
	}
	up := f.layers[0]
	var a libservices.Attr
	err := up.Lstat(dir, &a)
	if err == nil {
		if !a.IsDir() {
			return syscall.ENOTDIR
		}
		return nil
	}
	if err != syscall.ENOENT {
		return err
	}
	parent, _ := libservices.Split(dir)
	if err := f.copyUpDir(parent); err != nil {
		return err
	}
	for li := 1; li < len(f.layers); li++ {
		if err := f.layers[li].Lstat(dir, &a); err == nil && a.IsDir() {
			tmp := f.tmpName(parent)
			if err := up.Mkdir(tmp, a.Mode&0o7777); err != nil {
				return err
			}
			if err := f.copyMeta(f.layers[li], dir, &a, tmp, false); err != nil {
				up.Rmdir(tmp)
				return err
			}
			if err := up.Rename(tmp, dir); err != nil {
				up.Rmdir(tmp)
				return err
			}
			f.reshapes.Add(1)
			return nil
		}
	}
	return syscall.ENOENT
}

// copyUpNode copies an existing node into the upper branch if it is not there.
func (f *FS) copyUpNode(n *node) error {
	if n.layer == 0 {
		return nil
	}
	if n.attr.IsDir() {
		return f.copyUpDir(n.path)
	}
	parent, _ := libservices.Split(n.path)
	if err := f.copyUpDir(parent); err != nil {
		return err
	}
	src := f.layers[n.layer]
	up := f.layers[0]
	tmp := f.tmpName(parent)
	switch {
	case n.attr.IsSymlink():
		target, err := src.Readlink(n.path)
		if err != nil {
			return err
		}
		if err := up.Symlink(target, tmp); err != nil {
			return err
		}
	case n.attr.IsRegular():
		if err := f.copyData(src, n, tmp); err != nil {
			up.Unlink(tmp)
			return err
		}
		if err := f.copyMeta(src, n.path, &n.attr, tmp, false); err != nil {
			up.Unlink(tmp)
			return err
		}
	default:
		return syscall.EPERM // devices, fifos and sockets are not copied up
	}
	if err := up.Rename(tmp, n.path); err != nil {
		up.Unlink(tmp)
		return err
	}
	return nil
}

func (f *FS) copyData(src libservices.FS, n *node, tmp string) error {
	up := f.layers[0]
	in, err := src.Open(n.path, libservices.O_RDONLY|libservices.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer src.Close(in)
	out, err := up.Open(tmp, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_EXCL, n.attr.Mode&0o7777)
	if err != nil {
		return err
	}
	buf := make([]byte, copyChunk)
	var off int64
	for {
		m, err := src.ReadAt(in, buf, off)
		if err != nil {
			up.Close(out)
			return err
		}
		if m == 0 {
			break
		}
		if !bytes.Equal(buf[:m], zeroChunk[:m]) {
			if _, err := up.WriteAt(out, buf[:m], off); err != nil {
				up.Close(out)
				return err
			}
		}
		off += int64(m)
	}
	if err := up.Ftruncate(out, off); err != nil {
		up.Close(out)
		return err
	}
	if err := up.Fsync(out); err != nil {
		up.Close(out)
		return err
	}
	return up.Close(out)
}

// lowerHas reports whether a branch below the upper one shows base in dir, so
// that removing it from the upper branch needs a whiteout.
func (f *FS) lowerHas(dir dirInfo, base string) (bool, error) {
	p := libservices.Join(dir.path, base)
	for _, li := range dir.layers {
		if li == 0 {
			wh, err := f.has(0, libservices.Join(dir.path, whPrefix+base))
			if err != nil || wh {
				return false, err
			}
			continue
		}
		if ok, err := f.has(li, p); err != nil || ok {
			return ok, err
		}
		if wh, err := f.has(li, libservices.Join(dir.path, whPrefix+base)); err != nil || wh {
			return false, err
		}
	}
	return false, nil
}

func (f *FS) whiteout(dir, base string) error {
	if err := f.copyUpDir(dir); err != nil {
		return err
	}
	up := f.layers[0]
	h, err := up.Open(libservices.Join(dir, whPrefix+base), libservices.O_WRONLY|libservices.O_CREAT|libservices.O_EXCL, 0)
	if err == syscall.EEXIST {
		return nil
	}
	if err != nil {
		return err
	}
	return up.Close(h)
}

// dropWhiteout removes a whiteout for base in the upper dir, if any.
func (f *FS) dropWhiteout(dir, base string) error {
	err := f.layers[0].Unlink(libservices.Join(dir, whPrefix+base))
	if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ENAMETOOLONG {
		return nil
	}
	return err
}

// prepareCreate resolves name for creating it: the parent must exist, the name
// must not, and the parent is copied up.
func (f *FS) prepareCreate(name string) (*node, error) {
	n, err := f.lookup(name, false)
	if err != nil {
		return nil, err
	}
	if n.exists() || n.base == "" {
		return nil, syscall.EEXIST
	}
	if reserved(n.base) {
		return nil, syscall.EINVAL
	}
	if err := f.copyUpDir(n.parent.path); err != nil {
		return nil, err
	}
	return n, nil
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.prepareCreate(name)
	if err != nil {
		return err
	}
	up := f.layers[0]
	hidden, err := f.has(0, libservices.Join(n.parent.path, whPrefix+n.base))
	if err != nil {
		return err
	}
	if !hidden {
		return up.Mkdir(n.path, mode)
	}
	// The name was removed from the merged view: the new directory must not
	// show a lower directory's old contents.
	tmp := f.tmpName(n.parent.path)
	if err := up.Mkdir(tmp, mode); err != nil {
		return err
	}
	if err := f.whiteoutFile(libservices.Join(tmp, opaqueTag)); err != nil {
		up.Rmdir(tmp)
		return err
	}
	if err := up.Rename(tmp, n.path); err != nil {
		up.Unlink(libservices.Join(tmp, opaqueTag))
		up.Rmdir(tmp)
		return err
	}
	return f.dropWhiteout(n.parent.path, n.base)
}

func (f *FS) whiteoutFile(p string) error {
	up := f.layers[0]
	h, err := up.Open(p, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_EXCL, 0)
	if err != nil {
		return err
	}
	return up.Close(h)
}

// Symlink implements libservices.FS.
func (f *FS) Symlink(target, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.prepareCreate(name)
	if err != nil {
		return err
	}
	if err := f.layers[0].Symlink(target, n.path); err != nil {
		return err
	}
	return f.dropWhiteout(n.parent.path, n.base)
}

// Link implements libservices.FS. Both names end up in the upper branch.
func (f *FS) Link(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, err := f.get(oldname, false)
	if err != nil {
		return err
	}
	nn, err := f.lookup(newname, false)
	if err != nil {
		return err
	}
	if nn.exists() || nn.base == "" {
		return syscall.EEXIST
	}
	if o.attr.IsDir() {
		return syscall.EPERM
	}
	if reserved(nn.base) {
		return syscall.EINVAL
	}
	if err := f.copyUpNode(o); err != nil {
		return err
	}
	if err := f.copyUpDir(nn.parent.path); err != nil {
		return err
	}
	if err := f.layers[0].Link(o.path, nn.path); err != nil {
		return err
	}
	return f.dropWhiteout(nn.parent.path, nn.base)
}

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(name, false)
	if err != nil {
		return err
	}
	if n.attr.IsDir() || n.base == "" {
		return syscall.EISDIR
	}
	return f.remove(n, false)
}

// remove takes n out of the merged view.
func (f *FS) remove(n *node, dir bool) error {
	need, err := f.lowerHas(n.parent, n.base)
	if err != nil {
		return err
	}
	if n.layer == 0 {
		up := f.layers[0]
		if dir {
			if err := f.clearMarkers(n.path); err != nil {
				return err
			}
			err = up.Rmdir(n.path)
		} else {
			err = up.Unlink(n.path)
		}
		if err != nil {
			return err
		}
	}
	if need {
		return f.whiteout(n.parent.path, n.base)
	}
	return nil
}

// clearMarkers removes the whiteouts and opaque marker of an upper directory
// that is empty in the merged view, so that it can be removed or replaced.
func (f *FS) clearMarkers(dir string) error {
	up := f.layers[0]
	ents, err := up.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !reserved(e.Name) {
			return syscall.ENOTEMPTY
		}
		if err := up.Unlink(libservices.Join(dir, e.Name)); err != nil && err != syscall.ENOENT {
			return err
		}
	}
	return nil
}

func (f *FS) mergedEmpty(n *node) (bool, error) {
	ents, err := f.mergedEntries(dirInfo{path: n.path, layers: n.merged})
	return len(ents) == 0, err
}

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.get(name, false)
	if err != nil {
		return err
	}
	if !n.attr.IsDir() {
		return syscall.ENOTDIR
	}
	if n.base == "" {
		return syscall.EBUSY
	}
	empty, err := f.mergedEmpty(n)
	if err != nil {
		return err
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	return f.remove(n, true)
}

// Rename implements libservices.FS.
func (f *FS) Rename(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, err := f.lookup(oldname, false)
	if err != nil {
		return err
	}
	nn, err := f.lookup(newname, false)
	if err != nil {
		return err
	}
	if !o.exists() {
		return syscall.ENOENT
	}
	if o.base == "" || nn.base == "" {
		return syscall.EBUSY
	}
	if o.attr.IsDir() && libservices.HasPrefixDir(nn.path, o.path) {
		if nn.path == o.path {
			return nil
		}
		return syscall.EINVAL
	}
	if reserved(nn.base) {
		return syscall.EINVAL
	}
	if nn.exists() {
		if nn.layer == o.layer && nn.attr.Ino == o.attr.Ino {
			return nil // two names of one file
		}
		if nn.attr.IsDir() && libservices.HasPrefixDir(o.path, nn.path) {
			return syscall.ENOTEMPTY
		}
		switch {
		case o.attr.IsDir() && !nn.attr.IsDir():
			return syscall.ENOTDIR
		case !o.attr.IsDir() && nn.attr.IsDir():
			return syscall.EISDIR
		case nn.attr.IsDir():
			empty, err := f.mergedEmpty(nn)
			if err != nil {
				return err
			}
			if !empty {
				return syscall.ENOTEMPTY
			}
		}
	}
	if o.attr.IsDir() && (o.layer != 0 || len(o.merged) > 1) {
		return syscall.EXDEV // see the package doc
	}
	if err := f.copyUpNode(o); err != nil {
		return err
	}
	if err := f.copyUpDir(nn.parent.path); err != nil {
		return err
	}
	up := f.layers[0]
	targetLower, err := f.lowerHas(nn.parent, nn.base)
	if err != nil {
		return err
	}
	if nn.exists() && nn.attr.IsDir() && nn.layer == 0 {
		if err := f.clearMarkers(nn.path); err != nil {
			return err
		}
	}
	// A directory moved onto a name that a lower branch has, visibly or behind a
	// whiteout, must not merge with the lower directory: make it opaque, as Mkdir
	// does over a whiteout.
	targetHidden, err := f.has(0, libservices.Join(nn.parent.path, whPrefix+nn.base))
	if err != nil {
		return err
	}
	if o.attr.IsDir() && (targetLower || targetHidden) {
		if err := f.whiteoutFile(libservices.Join(o.path, opaqueTag)); err != nil && err != syscall.EEXIST {
			return err
		}
	}
	sourceLower, err := f.lowerHas(o.parent, o.base)
	if err != nil {
		return err
	}
	if err := up.Rename(o.path, nn.path); err != nil {
		return err
	}
	if err := f.dropWhiteout(nn.parent.path, nn.base); err != nil {
		return err
	}
	if sourceLower {
		return f.whiteout(o.parent.path, o.base)
	}
	return nil
}

// handle is an open file of the union: the branch that holds it and its handle.
type handle struct {
	fs     *FS
	layer  libservices.FS
	h      libservices.Handle
	closed atomic.Bool
}

func writeIntent(flags int) bool {
	return flags&libservices.O_ACCMODE != libservices.O_RDONLY || flags&libservices.O_TRUNC != 0
}

// Open implements libservices.FS.
func (f *FS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	if flags&libservices.O_CREAT != 0 && flags&libservices.O_DIRECTORY != 0 {
		return nil, syscall.EINVAL
	}
	modify := writeIntent(flags) || flags&libservices.O_CREAT != 0
	if modify {
		f.mu.Lock()
		defer f.mu.Unlock()
	} else {
		f.mu.RLock()
		defer f.mu.RUnlock()
	}
	excl := flags&(libservices.O_CREAT|libservices.O_EXCL) == libservices.O_CREAT|libservices.O_EXCL
	n, err := f.lookup(name, flags&libservices.O_NOFOLLOW == 0 && !excl)
	if err != nil {
		return nil, err
	}
	if !n.exists() {
		if flags&libservices.O_CREAT == 0 {
			return nil, syscall.ENOENT
		}
		if reserved(n.base) {
			return nil, syscall.EINVAL
		}
		if err := f.copyUpDir(n.parent.path); err != nil {
			return nil, err
		}
		h, err := f.layers[0].Open(n.path, flags|libservices.O_EXCL, mode)
		if err != nil {
			return nil, err
		}
		if err := f.dropWhiteout(n.parent.path, n.base); err != nil {
			f.layers[0].Close(h)
			return nil, err
		}
		return &handle{fs: f, layer: f.layers[0], h: h}, nil
	}
	if excl {
		return nil, syscall.EEXIST
	}
	if n.attr.IsDir() && (writeIntent(flags) || flags&libservices.O_CREAT != 0) {
		return nil, syscall.EISDIR
	}
	layer := n.layer
	if writeIntent(flags) && layer != 0 && n.attr.IsRegular() {
		if err := f.copyUpNode(n); err != nil {
			return nil, err
		}
		layer = 0
	}
	h, err := f.layers[layer].Open(n.path, flags&^(libservices.O_CREAT|libservices.O_EXCL), 0)
	if err != nil {
		return nil, err
	}
	return &handle{fs: f, layer: f.layers[layer], h: h}, nil
}

func (f *FS) handle(h libservices.Handle) (*handle, error) {
	uh, ok := h.(*handle)
	if !ok || uh == nil || uh.fs != f || uh.closed.Load() {
		return nil, syscall.EBADF
	}
	return uh, nil
}

// ReadAt implements libservices.FS.
func (f *FS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	uh, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	return uh.layer.ReadAt(uh.h, p, off)
}

// WriteAt implements libservices.FS.
func (f *FS) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	uh, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	return uh.layer.WriteAt(uh.h, p, off)
}

// Fstat implements libservices.FS.
func (f *FS) Fstat(h libservices.Handle, a *libservices.Attr) error {
	uh, err := f.handle(h)
	if err != nil {
		return err
	}
	return uh.layer.Fstat(uh.h, a)
}

// Ftruncate implements libservices.FS.
func (f *FS) Ftruncate(h libservices.Handle, size int64) error {
	uh, err := f.handle(h)
	if err != nil {
		return err
	}
	return uh.layer.Ftruncate(uh.h, size)
}

// Fallocate implements libservices.FS.
func (f *FS) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	uh, err := f.handle(h)
	if err != nil {
		return err
	}
	return uh.layer.Fallocate(uh.h, mode, off, length)
}

// Fsync implements libservices.FS.
func (f *FS) Fsync(h libservices.Handle) error {
	uh, err := f.handle(h)
	if err != nil {
		return err
	}
	return uh.layer.Fsync(uh.h)
}

// Fdatasync implements libservices.FS.
func (f *FS) Fdatasync(h libservices.Handle) error {
	uh, err := f.handle(h)
	if err != nil {
		return err
	}
	return uh.layer.Fdatasync(uh.h)
}

// Flush implements libservices.Flusher, forwarding to the branch that holds the
// file (a handle never moves between branches: see copy-up in Open).
func (f *FS) Flush(h libservices.Handle) error {
	uh, err := f.handle(h)
	if err != nil {
		return err
	}
	if fl, ok := uh.layer.(libservices.Flusher); ok {
		return fl.Flush(uh.h)
	}
	return nil
}

// Close implements libservices.FS.
func (f *FS) Close(h libservices.Handle) error {
	uh, ok := h.(*handle)
	if !ok || uh == nil || uh.fs != f || !uh.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	return uh.layer.Close(uh.h)
}
