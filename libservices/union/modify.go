package union

import (
	"bytes"
	"strconv"
	"strings"
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
// upper branch, top down, each copy under its parent's lock. It takes no lock
// on entry and holds none on return.
func (f *FS) copyUpDir(dir string) error {
	if dir == "." {
		return nil
	}
	cur, err := f.dir(".", f.all)
	if err != nil {
		return err
	}
	for _, c := range strings.Split(dir, "/") {
		e, _, err := f.child(cur, c, false)
		if err != nil {
			return err
		}
		if !e.isDir() {
			if e.exists() {
				return syscall.ENOTDIR
			}
			return syscall.ENOENT
		}
		if e.layer != 0 {
			unlock := f.lockDirs(cur.path)
			e, err = f.copyDirLocked(cur, c)
			unlock()
			if err != nil {
				return err
			}
		}
		if cur, err = f.dir(libservices.Join(cur.path, c), e.dirs); err != nil {
			return err
		}
	}
	return nil
}

// copyDirLocked copies directory base of d (whose lock the caller holds, and
// which is in the upper branch) up, unless it is there already, and returns
// its entry.
func (f *FS) copyDirLocked(d dirRef, base string) (nameEnt, error) {
	d, err := f.dirLocked(d.path, d.cand)
	if err != nil {
		return nameEnt{}, err
	}
	if d.layers[0] != 0 {
		return nameEnt{}, retryErr{errno: syscall.ENOENT} // d itself moved since the walk
	}
	e, _, err := f.child(d, base, true)
	if err != nil {
		return e, err
	}
	if !e.isDir() {
		return e, syscall.ENOENT
	}
	if e.layer == 0 {
		return e, nil
	}
	p := libservices.Join(d.path, base)
	up := f.layers[0]
	var a libservices.Attr
	if err := f.layers[e.layer].Lstat(p, &a); err != nil {
		return e, err
	}
	tmp := f.tmpName(d.path)
	if err := up.Mkdir(tmp, a.Mode&0o7777); err != nil {
		return e, err
	}
	if err := f.copyMeta(f.layers[e.layer], p, &a, tmp, false); err != nil {
		up.Rmdir(tmp)
		return e, err
	}
	if err := up.Rename(tmp, p); err != nil {
		up.Rmdir(tmp)
		return e, err
	}
	f.reshapes.Add(1)
	e.layer, e.dirs = 0, append([]int{0}, e.dirs...)
	d.st.set(base, e)
	f.forgetOne(p) // its branches changed
	return e, nil
}

// copyFileLocked copies the non-directory n up into its parent, which is in
// the upper branch and whose lock the caller holds.
func (f *FS) copyFileLocked(n *node) error {
	src := f.layers[n.layer()]
	up := f.layers[0]
	var a libservices.Attr
	if err := src.Lstat(n.path, &a); err != nil {
		if branchGone(err) {
			f.staleLocked(n.parent, n.seq)
			return retryErr{errno: syscall.ENOENT}
		}
		return err
	}
	tmp := f.tmpName(n.parent.path)
	switch {
	case a.IsSymlink():
		target, err := src.Readlink(n.path)
		if err != nil {
			return err
		}
		if err := up.Symlink(target, tmp); err != nil {
			return err
		}
	case a.IsRegular():
		if err := f.copyData(src, n.path, &a, tmp); err != nil {
			up.Unlink(tmp)
			return err
		}
		if err := f.copyMeta(src, n.path, &a, tmp, false); err != nil {
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
	n.ent.layer, n.ent.upperWh = 0, false
	n.parent.st.set(n.base, n.ent)
	return nil
}

func (f *FS) copyData(src libservices.FS, p string, a *libservices.Attr, tmp string) error {
	up := f.layers[0]
	in, err := src.Open(p, libservices.O_RDONLY|libservices.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer src.Close(in)
	out, err := up.Open(tmp, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_EXCL, a.Mode&0o7777)
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

// relock takes the lock of n's parent (which the caller found without it) and
// reads n's entry again from the parent's state, which it refreshes if
// needed. up says that the parent must be in the upper branch. A final
// symlink that appeared when follow is set means a change raced with the
// walk: the operation runs again.
func (f *FS) relock(n *node, follow, up bool) (func(), error) {
	unlock := f.lockDirs(n.parent.path)
	if err := f.refreshLocked(n, follow, up); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

func (f *FS) refreshLocked(n *node, follow, up bool) error {
	d, err := f.dirLocked(n.parent.path, n.parent.cand)
	if err != nil {
		return err
	}
	if up && d.layers[0] != 0 {
		return retryErr{errno: syscall.ENOENT}
	}
	e, seq, err := f.child(d, n.base, true)
	if err != nil {
		return err
	}
	if follow && e.isLink() {
		return retryErr{errno: syscall.ENOENT}
	}
	n.parent, n.ent, n.seq = d, e, seq
	return nil
}

// upParent copies the parent of n up if it is not in the upper branch, and
// then asks for the operation to run again over the new state.
func (f *FS) upParent(n *node) error {
	if n.parent.layers[0] == 0 {
		return nil
	}
	if err := f.copyUpDir(n.parent.path); err != nil {
		return err
	}
	return again
}

// upNode resolves name (following a final symlink if follow), runs check on it, and
// makes sure it is in the upper branch, copying it up if needed.
func (f *FS) upNode(name string, follow bool, check func(*node) error) (*node, error) {
	n, err := f.get(name, follow)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(n); err != nil {
			return nil, err
		}
	}
	if n.layer() == 0 {
		return n, nil
	}
	if n.ent.isDir() {
		return n, f.copyUpDir(n.path)
	}
	if err := f.upParent(n); err != nil {
		return nil, err
	}
	unlock, err := f.relock(n, follow, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !n.exists() {
		return nil, syscall.ENOENT
	}
	if n.layer() != 0 {
		if err := f.copyFileLocked(n); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// whiteoutLocked hides base of dir (in the upper branch, locked).
func (f *FS) whiteoutLocked(dir, base string) error {
	err := f.whiteoutFile(libservices.Join(dir, whPrefix+base))
	if err == syscall.EEXIST {
		return nil
	}
	return err
}

// dropWhiteout removes a whiteout for base in the upper dir, if any.
func (f *FS) dropWhiteout(dir, base string) error {
	err := f.layers[0].Unlink(libservices.Join(dir, whPrefix+base))
	if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ENAMETOOLONG {
		return nil
	}
	return err
}

// prepareCreate resolves name for creating it and locks its parent: the parent
// must exist and is copied up, the name must not exist.
func (f *FS) prepareCreate(name string) (*node, func(), error) {
	n, err := f.lookup(name, false)
	if err != nil {
		return nil, nil, err
	}
	if n.exists() || n.base == "" {
		return nil, nil, syscall.EEXIST
	}
	if reserved(n.base) {
		return nil, nil, syscall.EINVAL
	}
	if err := f.upParent(n); err != nil {
		return nil, nil, err
	}
	unlock, err := f.relock(n, false, true)
	if err != nil {
		return nil, nil, err
	}
	if n.exists() {
		unlock()
		return nil, nil, syscall.EEXIST
	}
	return n, unlock, nil
}

// created records that the upper branch now holds n as a file of type typ,
// and drops the whiteout the name had, if any. The parent's lock is held.
func (f *FS) created(n *node, typ uint32) error {
	e := nameEnt{layer: 0, typ: typ, lower: n.ent.lower}
	if typ == syscall.S_IFDIR {
		e.dirs = []int{0}
	}
	if n.ent.upperWh {
		if err := f.dropWhiteout(n.parent.path, n.base); err != nil {
			f.dropLocked(n.parent)
			return err
		}
	}
	n.parent.st.set(n.base, e)
	return nil
}

// dropLocked drops the state of r after a change that failed half way.
func (f *FS) dropLocked(r dirRef) {
	if r.st != nil {
		r.st.mu.Lock()
		r.st.dead = true
		r.st.seq++
		r.st.mu.Unlock()
	}
}

// exists is the error of a create whose name the upper branch holds although
// the state said it did not: the state was stale.
func (f *FS) createErr(n *node, err error) error {
	if err == syscall.EEXIST && n.parent.st != nil {
		f.staleLocked(n.parent, n.seq)
		return retryErr{errno: syscall.EEXIST}
	}
	return err
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error {
	return f.do(func() error {
		n, unlock, err := f.prepareCreate(name)
		if err != nil {
			return err
		}
		defer unlock()
		up := f.layers[0]
		if !n.ent.upperWh {
			if err := up.Mkdir(n.path, mode); err != nil {
				return f.createErr(n, err)
			}
			f.forgetOne(n.path) // a state of an older directory of the name
			return f.created(n, syscall.S_IFDIR)
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
		f.forgetOne(n.path)
		return f.created(n, syscall.S_IFDIR)
	})
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
	return f.do(func() error {
		n, unlock, err := f.prepareCreate(name)
		if err != nil {
			return err
		}
		defer unlock()
		if err := f.layers[0].Symlink(target, n.path); err != nil {
			return f.createErr(n, err)
		}
		return f.created(n, syscall.S_IFLNK)
	})
}

// Link implements libservices.FS. Both names end up in the upper branch.
func (f *FS) Link(oldname, newname string) error {
	return f.do(func() error {
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
		if o.ent.isDir() {
			return syscall.EPERM
		}
		if reserved(nn.base) {
			return syscall.EINVAL
		}
		if o.layer() != 0 {
			if _, err := f.upNode(oldname, false, nil); err != nil {
				return err
			}
			return again
		}
		if err := f.upParent(nn); err != nil {
			return err
		}
		unlock, err := f.relock(nn, false, true)
		if err != nil {
			return err
		}
		defer unlock()
		if nn.exists() {
			return syscall.EEXIST
		}
		if err := f.layers[0].Link(o.path, nn.path); err != nil {
			if branchGone(err) {
				return retryErr{errno: syscall.ENOENT}
			}
			return f.createErr(nn, err)
		}
		return f.created(nn, o.ent.typ)
	})
}

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error {
	return f.do(func() error {
		n, err := f.get(name, false)
		if err != nil {
			return err
		}
		if n.ent.isDir() || n.base == "" {
			return syscall.EISDIR
		}
		if err := f.upParent(n); err != nil {
			return err
		}
		unlock, err := f.relock(n, false, true)
		if err != nil {
			return err
		}
		defer unlock()
		if !n.exists() {
			return syscall.ENOENT
		}
		if n.ent.isDir() {
			return syscall.EISDIR
		}
		return f.removeLocked(n, false)
	})
}

// removeLocked takes n out of the merged view; the lock of its parent (and
// for a directory, its own) is held.
func (f *FS) removeLocked(n *node, dir bool) error {
	need := n.ent.lower // removing it from the upper branch would show a lower one
	if n.layer() == 0 {
		up := f.layers[0]
		var err error
		if dir {
			if err := f.clearMarkers(n.path); err != nil {
				return err
			}
			err = up.Rmdir(n.path)
		} else {
			err = up.Unlink(n.path)
		}
		if err != nil {
			if branchGone(err) && n.parent.st != nil {
				f.staleLocked(n.parent, n.seq)
				return retryErr{errno: syscall.ENOENT}
			}
			return err
		}
	}
	if need {
		if err := f.whiteoutLocked(n.parent.path, n.base); err != nil {
			f.dropLocked(n.parent)
			return err
		}
	}
	n.parent.st.set(n.base, nameEnt{layer: -1, upperWh: need, lower: n.ent.lower})
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

// mergedEmpty lists directory n afresh; locked says that its lock is held.
func (f *FS) mergedEmpty(n *node, locked bool) (bool, error) {
	var d dirRef
	var err error
	if locked {
		d, err = f.dirLocked(n.path, n.ent.dirs)
	} else {
		d, err = f.dir(n.path, n.ent.dirs)
	}
	if err != nil {
		return false, err
	}
	ents, err := f.mergedEntries(d)
	return len(ents) == 0, err
}

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error {
	return f.do(func() error {
		n, err := f.get(name, false)
		if err != nil {
			return err
		}
		if !n.ent.isDir() {
			return syscall.ENOTDIR
		}
		if n.base == "" {
			return syscall.EBUSY
		}
		// ENOTEMPTY must not cost a copy-up: check before, and again locked.
		if empty, err := f.mergedEmpty(n, false); err != nil || !empty {
			if err == nil {
				err = syscall.ENOTEMPTY
			}
			return err
		}
		if err := f.upParent(n); err != nil {
			return err
		}
		unlock := f.lockDirs(n.parent.path, n.path)
		defer unlock()
		if err := f.refreshLocked(n, false, true); err != nil {
			return err
		}
		if !n.exists() {
			return syscall.ENOENT
		}
		if !n.ent.isDir() {
			return syscall.ENOTDIR
		}
		empty, err := f.mergedEmpty(n, true)
		if err != nil {
			return err
		}
		if !empty {
			return syscall.ENOTEMPTY
		}
		err = f.removeLocked(n, true)
		f.forget(n.path)
		return err
	})
}

// renameCheck finds the errors of renaming o to nn, or that there is nothing
// to do (done); locked says that the locks of both parents and of the
// directories involved are held.
func (f *FS) renameCheck(o, nn *node, locked bool) (done bool, err error) {
	if !o.exists() {
		return false, syscall.ENOENT
	}
	if o.base == "" || nn.base == "" {
		return false, syscall.EBUSY
	}
	if o.ent.isDir() && libservices.HasPrefixDir(nn.path, o.path) {
		if nn.path == o.path {
			return true, nil
		}
		return false, syscall.EINVAL
	}
	if reserved(nn.base) {
		return false, syscall.EINVAL
	}
	if nn.exists() {
		if nn.layer() == o.layer() {
			var oa, na libservices.Attr
			if err := f.layers[o.layer()].Lstat(o.path, &oa); err != nil {
				return false, err
			}
			if err := f.layers[nn.layer()].Lstat(nn.path, &na); err != nil {
				return false, err
			}
			if oa.Ino == na.Ino {
				return true, nil // two names of one file
			}
		}
		if nn.ent.isDir() && libservices.HasPrefixDir(o.path, nn.path) {
			return false, syscall.ENOTEMPTY
		}
		switch {
		case o.ent.isDir() && !nn.ent.isDir():
			return false, syscall.ENOTDIR
		case !o.ent.isDir() && nn.ent.isDir():
			return false, syscall.EISDIR
		case nn.ent.isDir():
			empty, err := f.mergedEmpty(nn, locked)
			if err != nil {
				return false, err
			}
			if !empty {
				return false, syscall.ENOTEMPTY
			}
		}
	}
	if o.ent.isDir() {
		if o.layer() != 0 {
			return false, syscall.EXDEV // see the package doc
		}
		var od dirRef
		if locked {
			od, err = f.dirLocked(o.path, o.ent.dirs)
		} else {
			od, err = f.dir(o.path, o.ent.dirs)
		}
		if err != nil {
			return false, err
		}
		if len(od.layers) > 1 {
			return false, syscall.EXDEV
		}
	}
	return false, nil
}

// Rename implements libservices.FS.
func (f *FS) Rename(oldname, newname string) error {
	return f.do(func() error { return f.rename(oldname, newname) })
}

func (f *FS) rename(oldname, newname string) error {
	o, err := f.lookup(oldname, false)
	if err != nil {
		return err
	}
	nn, err := f.lookup(newname, false)
	if err != nil {
		return err
	}
	// Check without locks first, so that a rename that fails copies nothing up.
	if done, err := f.renameCheck(o, nn, false); done || err != nil {
		return err
	}
	// Copy up what must be up, without locks; then lock and look again.
	if !o.ent.isDir() && o.layer() != 0 {
		if err := f.upParent(o); err != nil {
			return err
		}
		unlock, err := f.relock(o, false, true)
		if err != nil {
			return err
		}
		if o.exists() && !o.ent.isDir() && o.layer() != 0 {
			err = f.copyFileLocked(o)
		}
		unlock()
		if err != nil {
			return err
		}
		return again
	}
	if err := f.upParent(nn); err != nil {
		return err
	}
	paths := []string{o.parent.path, nn.parent.path}
	oDir, nDir := o.ent.isDir(), nn.ent.isDir()
	if oDir {
		paths = append(paths, o.path)
	}
	if nDir {
		paths = append(paths, nn.path)
	}
	unlock := f.lockDirs(paths...)
	defer unlock()
	if err := f.refreshLocked(o, false, true); err != nil {
		return err
	}
	if err := f.refreshLocked(nn, false, true); err != nil {
		return err
	}
	if !o.exists() {
		return syscall.ENOENT
	}
	if o.ent.isDir() != oDir || nn.ent.isDir() && !nDir || o.layer() != 0 {
		return retryErr{errno: syscall.ENOENT} // changed since the walk: lock again
	}
	if done, err := f.renameCheck(o, nn, true); done || err != nil {
		return err
	}
	up := f.layers[0]
	if nn.exists() && nn.ent.isDir() && nn.layer() == 0 {
		if err := f.clearMarkers(nn.path); err != nil {
			return err
		}
	}
	// A directory moved onto a name that a lower branch has, visibly or behind a
	// whiteout, must not merge with the lower directory: make it opaque, as Mkdir
	// does over a whiteout.
	if o.ent.isDir() && (nn.ent.lower || nn.ent.upperWh) {
		if err := f.whiteoutFile(libservices.Join(o.path, opaqueTag)); err != nil && err != syscall.EEXIST {
			return err
		}
	}
	if err := up.Rename(o.path, nn.path); err != nil {
		if branchGone(err) {
			f.staleLocked(o.parent, o.seq)
			return retryErr{errno: syscall.ENOENT}
		}
		return err
	}
	if o.ent.isDir() || nn.ent.isDir() {
		f.forget(o.path)
		f.forget(nn.path)
	}
	sourceLower := o.ent.lower
	if nn.ent.upperWh {
		if err := f.dropWhiteout(nn.parent.path, nn.base); err != nil {
			f.dropLocked(o.parent)
			f.dropLocked(nn.parent)
			return err
		}
	}
	if sourceLower {
		if err := f.whiteoutLocked(o.parent.path, o.base); err != nil {
			f.dropLocked(o.parent)
			f.dropLocked(nn.parent)
			return err
		}
	}
	o.parent.st.set(o.base, nameEnt{layer: -1, upperWh: sourceLower, lower: o.ent.lower})
	ne := nameEnt{layer: 0, typ: o.ent.typ, lower: nn.ent.lower}
	if o.ent.isDir() {
		ne.dirs = []int{0}
	}
	nn.parent.st.set(nn.base, ne)
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
func (f *FS) Open(name string, flags int, mode uint32) (h libservices.Handle, err error) {
	if flags&libservices.O_CREAT != 0 && flags&libservices.O_DIRECTORY != 0 {
		return nil, syscall.EINVAL
	}
	err = f.do(func() error {
		h, err = f.open(name, flags, mode)
		return err
	})
	return h, err
}

func (f *FS) open(name string, flags int, mode uint32) (libservices.Handle, error) {
	excl := flags&(libservices.O_CREAT|libservices.O_EXCL) == libservices.O_CREAT|libservices.O_EXCL
	follow := flags&libservices.O_NOFOLLOW == 0 && !excl
	n, err := f.lookup(name, follow)
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
		if err := f.upParent(n); err != nil {
			return nil, err
		}
		unlock, err := f.relock(n, follow, true)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if n.exists() {
			return nil, retryErr{errno: syscall.EEXIST} // created since the walk
		}
		up := f.layers[0]
		h, err := up.Open(n.path, flags|libservices.O_EXCL, mode)
		if err != nil {
			return nil, f.createErr(n, err)
		}
		if err := f.created(n, syscall.S_IFREG); err != nil {
			up.Close(h)
			return nil, err
		}
		return &handle{fs: f, layer: up, h: h}, nil
	}
	if excl {
		return nil, syscall.EEXIST
	}
	if n.ent.isDir() && (writeIntent(flags) || flags&libservices.O_CREAT != 0) {
		return nil, syscall.EISDIR
	}
	layer := n.layer()
	if writeIntent(flags) && layer != 0 && n.ent.typ == syscall.S_IFREG {
		if err := f.upParent(n); err != nil {
			return nil, err
		}
		unlock, err := f.relock(n, follow, true)
		if err != nil {
			return nil, err
		}
		if n.exists() && n.layer() != 0 && n.ent.typ == syscall.S_IFREG {
			err = f.copyFileLocked(n)
		}
		unlock()
		if err != nil {
			return nil, err
		}
		if !n.exists() || n.layer() != 0 {
			return nil, retryErr{errno: syscall.ENOENT}
		}
		layer = 0
	}
	h, err := f.layers[layer].Open(n.path, flags&^(libservices.O_CREAT|libservices.O_EXCL), 0)
	if err != nil {
		// Not ENOTDIR: O_DIRECTORY on a file is one.
		if err == syscall.ENOENT && n.base != "" {
			return nil, f.disagree(n.parent, n.seq, syscall.ENOENT)
		}
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
