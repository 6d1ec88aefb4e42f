package access

import (
	"sync"
	"syscall"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/libservices"
)

// attrPool recycles the Attr a check needs: passed to an FS method (an
// interface call), a local one would escape to the heap on every call.
var attrPool = sync.Pool{New: func() any { return new(libservices.Attr) }}

func newAttr() *libservices.Attr { return attrPool.Get().(*libservices.Attr) }

func freeAttr(a *libservices.Attr) { attrPool.Put(a) }

// errNoCred is what a nil Cred gets: no caller, no access.
var errNoCred = syscall.EACCES

// Lstat is libservices.FS.Lstat for cr: search permission on the directories
// that lead to name.
func (c *Checker) Lstat(cr *Cred, name string, a *libservices.Attr) error {
	if c.unchecked {
		return c.fs.Lstat(name, a)
	}
	if cr == nil {
		return errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	p, _, err := c.lookup(cr, clean)
	if err != nil {
		return err
	}
	return c.fs.Lstat(p, a)
}

// Stat is libservices.FS.Stat for cr: Lstat's checks, and for a final symbolic
// link MayFollowLink and the search permissions its target needs.
func (c *Checker) Stat(cr *Cred, name string, a *libservices.Attr) error {
	if c.unchecked {
		return c.fs.Stat(name, a)
	}
	if cr == nil {
		return errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	_, _, err = c.lookupFollow(cr, clean, a)
	return err
}

// Readlink is libservices.FS.Readlink for cr (search permission only: a link's
// own mode is never checked).
func (c *Checker) Readlink(cr *Cred, name string) (string, error) {
	if c.unchecked {
		return c.fs.Readlink(name)
	}
	if cr == nil {
		return "", errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return "", err
	}
	p, _, err := c.lookup(cr, clean)
	if err != nil {
		return "", err
	}
	return c.fs.Readlink(p)
}

// Opendir checks that cr may open the directory name for reading (opendir(3)):
// ENOTDIR, then read permission. It opens nothing.
func (c *Checker) Opendir(cr *Cred, name string) error {
	_, err := c.opendir(cr, name)
	return err
}

func (c *Checker) opendir(cr *Cred, name string) (string, error) {
	if c.unchecked {
		return name, nil
	}
	if cr == nil {
		return "", errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return "", err
	}
	a := newAttr()
	defer freeAttr(a)
	p, _, err := c.lookupFollow(cr, clean, a)
	if err != nil {
		return "", err
	}
	if !a.IsDir() {
		return "", syscall.ENOTDIR
	}
	if err := Permission(cr, a, MayRead); err != nil {
		return "", err
	}
	return p, nil
}

// ReadDir is libservices.FS.ReadDir for cr: Opendir's checks, then the listing.
func (c *Checker) ReadDir(cr *Cred, name string) ([]libservices.DirEntry, error) {
	p, err := c.opendir(cr, name)
	if err != nil {
		return nil, err
	}
	return c.fs.ReadDir(p)
}

// Statfs is statfs(2) of the filesystem holding name, for cr: the path's search
// permissions, then libservices.FS.Statfs.
func (c *Checker) Statfs(cr *Cred, name string, st *libservices.Statfs) error {
	if !c.unchecked {
		if cr == nil {
			return errNoCred
		}
		clean, err := libservices.Clean(name)
		if err != nil {
			return err
		}
		a := newAttr()
		_, _, err = c.lookupFollow(cr, clean, a)
		freeAttr(a)
		if err != nil {
			return err
		}
	}
	return c.fs.Statfs(st)
}

// create resolves the name a creating call makes and checks may_create: the
// resolved path and its directory's attributes, EEXIST when the name exists
// (before any permission error on the directory, as the kernel).
func (c *Checker) create(cr *Cred, clean string) (string, perm, error) {
	if libservices.IsRoot(clean) {
		return "", perm{}, syscall.EEXIST
	}
	p, dir, err := c.lookup(cr, clean)
	if err != nil {
		return "", perm{}, err
	}
	if err := c.absent(p); err != nil {
		return "", perm{}, err
	}
	if err := permission(cr, dir, MayWrite|MayExec); err != nil {
		return "", perm{}, err
	}
	return p, dir, nil
}

// absent is nil when nothing is at the resolved path p, else EEXIST (or the
// lookup's error).
func (c *Checker) absent(p string) error {
	var a libservices.Attr
	switch err := c.fs.Lstat(p, &a); err {
	case nil:
		return syscall.EEXIST
	case syscall.ENOENT:
		return nil
	default:
		return err
	}
}

// cleanTwo cleans the two names of a link or rename, the old one first.
func cleanTwo(oldname, newname string) (string, string, error) {
	oc, err := libservices.Clean(oldname)
	if err != nil {
		return "", "", err
	}
	nc, err := libservices.Clean(newname)
	if err != nil {
		return "", "", err
	}
	return oc, nc, nil
}

// Mkdir is libservices.FS.Mkdir for cr: may_create in the directory; the new
// directory gets mode&01777 (mkdir(2) keeps no set-ID bit), the caller's uid,
// and the caller's gid or, in a set-group-ID directory, the directory's gid and
// set-group-ID (see own).
func (c *Checker) Mkdir(cr *Cred, name string, mode uint32) error {
	if c.unchecked {
		return c.fs.Mkdir(name, mode)
	}
	if cr == nil {
		return errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	p, dir, err := c.create(cr, clean)
	if err != nil {
		return err
	}
	uid, gid, m := newOwner(cr, dir, syscall.S_IFDIR|mode&0o1777)
	before, known := c.shape()
	err = c.fs.Mkdir(p, mode&0o1777)
	c.settle(before, known, false, 0)
	if err != nil {
		return err
	}
	c.own(p, nil, uid, gid, m)
	return nil
}

// Symlink is libservices.FS.Symlink for cr: may_create. The link keeps the
// owner the FS gives it: the contract has no call that changes a link's own
// owner (see the package doc).
func (c *Checker) Symlink(cr *Cred, target, name string) error {
	if c.unchecked {
		return c.fs.Symlink(target, name)
	}
	if cr == nil {
		return errNoCred
	}
	if target == "" {
		return syscall.ENOENT
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	p, _, err := c.create(cr, clean)
	if err != nil {
		return err
	}
	before, known := c.shape()
	err = c.fs.Symlink(target, p)
	c.settle(before, known, false, 0)
	return err
}

// Link is libservices.FS.Link for cr, in linkat(2)'s order: the old name
// (not followed), the new name's directory and EEXIST, MayLink
// (protected_hardlinks), may_create, EPERM for a directory.
func (c *Checker) Link(cr *Cred, oldname, newname string) error {
	if c.unchecked {
		return c.fs.Link(oldname, newname)
	}
	if cr == nil {
		return errNoCred
	}
	oc, nc, err := cleanTwo(oldname, newname)
	if err != nil {
		return err
	}
	op, _, err := c.lookup(cr, oc)
	if err != nil {
		return err
	}
	var oa libservices.Attr
	if err := c.fs.Lstat(op, &oa); err != nil {
		return err
	}
	if libservices.IsRoot(nc) {
		return syscall.EEXIST
	}
	np, ndir, err := c.lookup(cr, nc)
	if err != nil {
		return err
	}
	if err := c.absent(np); err != nil {
		return err
	}
	if err := mayLink(c.prot, cr, permOf(&oa)); err != nil {
		return err
	}
	if err := permission(cr, ndir, MayWrite|MayExec); err != nil {
		return err
	}
	if oa.IsDir() {
		return syscall.EPERM
	}
	before, known := c.shape()
	err = c.fs.Link(op, np)
	c.settle(before, known, false, 0)
	return err
}

// Unlink is libservices.FS.Unlink for cr: MayDelete.
func (c *Checker) Unlink(cr *Cred, name string) error {
	if c.unchecked {
		return c.fs.Unlink(name)
	}
	return c.remove(cr, name, false)
}

// Rmdir is libservices.FS.Rmdir for cr: MayDelete.
func (c *Checker) Rmdir(cr *Cred, name string) error {
	if c.unchecked {
		return c.fs.Rmdir(name)
	}
	return c.remove(cr, name, true)
}

func (c *Checker) remove(cr *Cred, name string, isDir bool) error {
	if cr == nil {
		return errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if libservices.IsRoot(clean) {
		if isDir {
			return syscall.EBUSY
		}
		return syscall.EISDIR
	}
	p, dir, err := c.lookup(cr, clean)
	if err != nil {
		return err
	}
	// Outside a sticky directory, once the caller may write and search it,
	// nothing about the victim can refuse the removal but its type, which
	// the FS answers itself (ENOENT, EISDIR, ENOTDIR, in the kernel's order
	// from here on): no lookup of it first.
	if dir.mode&syscall.S_ISVTX != 0 || permission(cr, dir, MayWrite|MayExec) != nil {
		var a libservices.Attr
		if err := c.fs.Lstat(p, &a); err != nil {
			return err
		}
		if err := mayDelete(cr, dir, permOf(&a), isDir); err != nil {
			return err
		}
	}
	if isDir {
		err = c.fs.Rmdir(p)
		changed()
		return err
	}
	gen := generation.Load()
	before, known := c.shape()
	err = c.fs.Unlink(p)
	c.settle(before, known, true, gen)
	return err
}

// Rename is libservices.FS.Rename for cr, in renameat2(2)'s order: both
// directories resolved, the old name (ENOENT), the new one, EINVAL for a
// directory moved below itself and ENOTEMPTY for one moved onto one of its
// ancestors, nothing to do for two names of one file, MayDelete of the old name,
// MayDelete of the replaced name or may_create, and write permission on a
// directory that changes parent (its ".." changes).
func (c *Checker) Rename(cr *Cred, oldname, newname string) error {
	if c.unchecked {
		return c.fs.Rename(oldname, newname)
	}
	if cr == nil {
		return errNoCred
	}
	oc, nc, err := cleanTwo(oldname, newname)
	if err != nil {
		return err
	}
	if libservices.IsRoot(oc) || libservices.IsRoot(nc) {
		return syscall.EBUSY
	}
	op, odir, err := c.lookup(cr, oc)
	if err != nil {
		return err
	}
	np, ndir, err := c.lookup(cr, nc)
	if err != nil {
		return err
	}
	var oa, na libservices.Attr
	if err := c.fs.Lstat(op, &oa); err != nil {
		return err
	}
	exists := true
	switch err := c.fs.Lstat(np, &na); err {
	case nil:
	case syscall.ENOENT:
		exists = false
	default:
		return err
	}
	isDir := oa.IsDir()
	opar, _ := libservices.Split(op)
	npar, _ := libservices.Split(np)
	if opar != npar {
		if isDir && libservices.HasPrefixDir(npar, op) {
			return syscall.EINVAL
		}
		if exists && na.IsDir() && libservices.HasPrefixDir(opar, np) {
			return syscall.ENOTEMPTY
		}
	}
	if exists && oa.Ino == na.Ino {
		return nil
	}
	if err := mayDelete(cr, odir, permOf(&oa), isDir); err != nil {
		return err
	}
	if exists {
		err = mayDelete(cr, ndir, permOf(&na), isDir)
	} else {
		err = permission(cr, ndir, MayWrite|MayExec)
	}
	if err != nil {
		return err
	}
	if isDir && opar != npar {
		if err := permission(cr, permOf(&oa), MayWrite); err != nil {
			return err
		}
	}
	err = c.fs.Rename(op, np)
	changed()
	return err
}

// Setattr is libservices.FS.Setattr for cr, with the rules of the package-level
// Setattr (chmod, chown, truncate, utimensat).
func (c *Checker) Setattr(cr *Cred, name string, sa *libservices.SetAttr) error {
	if c.unchecked {
		return c.fs.Setattr(name, sa)
	}
	if cr == nil {
		return errNoCred
	}
	if sa.Valid&libservices.SetSize != 0 && sa.Size < 0 {
		return syscall.EINVAL
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	var a libservices.Attr
	p, _, err := c.lookupFollow(cr, clean, &a)
	if err != nil {
		return err
	}
	out, err := setattrRules(cr, permOf(&a), sa, c.walked)
	if err != nil {
		return err
	}
	err = c.fs.Setattr(p, &out)
	changed()
	return err
}

// Getxattr is libservices.FS.Getxattr for cr: XattrPermission for reading.
func (c *Checker) Getxattr(cr *Cred, name, attr string, dest []byte) (int, error) {
	if c.unchecked {
		return c.fs.Getxattr(name, attr, dest)
	}
	if cr == nil {
		return 0, errNoCred
	}
	if attr == "" || len(attr) > xattrNameMax {
		return 0, syscall.ERANGE
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return 0, err
	}
	a := newAttr()
	defer freeAttr(a)
	p, _, err := c.lookupFollow(cr, clean, a)
	if err != nil {
		return 0, err
	}
	if err := xattrPermission(cr, permOf(a), attr, false); err != nil {
		return 0, err
	}
	return c.fs.Getxattr(p, attr, dest)
}

// Setxattr is libservices.FS.Setxattr for cr: XattrPermission for writing and
// the security rules (security.capability needs CAP_SETFCAP, other security.*
// CAP_SYS_ADMIN; POSIX ACLs are refused).
func (c *Checker) Setxattr(cr *Cred, name, attr string, data []byte, flags int) error {
	if c.unchecked {
		return c.fs.Setxattr(name, attr, data, flags)
	}
	if cr == nil {
		return errNoCred
	}
	if flags&^(libservices.XattrCreate|libservices.XattrReplace) != 0 {
		return syscall.EINVAL
	}
	if attr == "" || len(attr) > xattrNameMax {
		return syscall.ERANGE
	}
	if len(data) > xattrSizeMax {
		return syscall.E2BIG
	}
	return c.changeXattr(cr, name, attr, data, false, func(p string) error { return c.fs.Setxattr(p, attr, data, flags) })
}

// Removexattr is libservices.FS.Removexattr for cr, with Setxattr's rules.
func (c *Checker) Removexattr(cr *Cred, name, attr string) error {
	if c.unchecked {
		return c.fs.Removexattr(name, attr)
	}
	if cr == nil {
		return errNoCred
	}
	if attr == "" || len(attr) > xattrNameMax {
		return syscall.ERANGE
	}
	return c.changeXattr(cr, name, attr, nil, true, func(p string) error { return c.fs.Removexattr(p, attr) })
}

func (c *Checker) changeXattr(cr *Cred, name, attr string, data []byte, remove bool, op func(string) error) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	var a libservices.Attr
	p, _, err := c.lookupFollow(cr, clean, &a)
	if err != nil {
		return err
	}
	// xattr_permission passes security.* and system.* to the security rules,
	// so the order of the two checks shows only for the others.
	if err := xattrPermission(cr, permOf(&a), attr, true); err != nil {
		return err
	}
	if err := xattrSecurityRules(cr, attr, data, remove); err != nil {
		return err
	}
	err = op(p)
	changed()
	return err
}

// Listxattr is libservices.FS.Listxattr for cr: the names of trusted.*
// attributes only for a caller with CAP_SYS_ADMIN, as the kernel's
// filesystems list them.
func (c *Checker) Listxattr(cr *Cred, name string) ([]string, error) {
	if c.unchecked {
		return c.fs.Listxattr(name)
	}
	if cr == nil {
		return nil, errNoCred
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	a := newAttr()
	p, _, err := c.lookupFollow(cr, clean, a)
	freeAttr(a)
	if err != nil {
		return nil, err
	}
	names, err := c.fs.Listxattr(p)
	if err != nil || cr.Has(peercred.CapSysAdmin) {
		return names, err
	}
	out := names[:0]
	for _, n := range names {
		if kindOf(n) != xattrTrusted {
			out = append(out, n)
		}
	}
	return out, nil
}

// own gives the file just created at p (open as h, when not nil) the owner
// the kernel would have given it (uid, gid) and its mode (S_IFMT bits
// included), where the FS gave it something else: chown first (which clears
// set-ID bits), then chmod. A refused chown (the service may not give files
// away: it has no CAP_CHOWN) keeps the FS's owner; the file stays, and the
// call succeeds, as the package doc says. An open file is asked through its
// handle, which resolves no path.
func (c *Checker) own(p string, h libservices.Handle, uid, gid, mode uint32) {
	var a libservices.Attr
	var err error
	if h != nil {
		err = c.fs.Fstat(h, &a)
	} else {
		err = c.fs.Lstat(p, &a)
	}
	if err != nil || a.IsSymlink() {
		return
	}
	if (a.Uid != uid || a.Gid != gid) && !(a.Uid != uid && c.cannotGive.Load()) {
		sa := libservices.SetAttr{Valid: libservices.SetUid | libservices.SetGid, Uid: uid, Gid: gid}
		switch err := c.fs.Setattr(p, &sa); {
		case err == nil && a.IsDir():
			if c.fs.Lstat(p, &a) != nil {
				return
			}
		case err == nil:
			// Created without set-ID bits, which are all a chown of a
			// non-directory may clear: its mode is as it was.
			a.Uid, a.Gid = uid, gid
		case err == syscall.EPERM && a.Uid != uid:
			// No CAP_CHOWN (a service running as its tenant's uid): every
			// later try would fail the same way.
			c.cannotGive.Store(true)
		}
	}
	if a.Mode&0o7777 != mode&0o7777 {
		sa := libservices.SetAttr{Valid: libservices.SetMode, Mode: mode & 0o7777}
		_ = c.fs.Setattr(p, &sa)
	}
	if a.IsDir() {
		// A walk may have remembered the new directory between its
		// creation and now, with the FS's owner and mode. A new regular
		// file is in no walk, and no File of it remembers anything yet.
		changed()
	}
}
