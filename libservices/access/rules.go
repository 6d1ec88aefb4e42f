package access

import (
	"strings"
	"syscall"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/libservices"
)

// Cred is a caller's identity as the kernel reported it (SO_PEERCRED at a
// direct-path handshake, a FUSE request header): uid, gid, supplementary groups
// and effective capabilities. A rule grants a privilege only through a
// capability in Caps, never because UID is 0.
type Cred = peercred.Cred

// Access masks of Permission, as the kernel's MAY_EXEC, MAY_WRITE and MAY_READ.
const (
	MayExec  uint32 = 1
	MayWrite uint32 = 2
	MayRead  uint32 = 4
)

// setID is the set-user-ID and set-group-ID bits.
const setID = syscall.S_ISUID | syscall.S_ISGID

// Largest extended attribute name and value, as XATTR_NAME_MAX and XATTR_SIZE_MAX.
const (
	xattrNameMax = 255
	xattrSizeMax = 65536
)

// perm is what the rules read of a file: type and mode bits, owner, group.
type perm struct {
	mode, uid, gid uint32
}

func permOf(a *libservices.Attr) perm { return perm{mode: a.Mode, uid: a.Uid, gid: a.Gid} }

func (p perm) isDir() bool { return p.mode&syscall.S_IFMT == syscall.S_IFDIR }
func (p perm) isReg() bool { return p.mode&syscall.S_IFMT == syscall.S_IFREG }

// InGroup is in_group_p: gid is the caller's (filesystem) gid or one of its
// supplementary groups.
func InGroup(cr *Cred, gid uint32) bool {
	if cr.GID == gid {
		return true
	}
	for _, g := range cr.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// ownerOrCapable is inode_owner_or_capable: the caller owns the file or holds
// CAP_FOWNER.
func ownerOrCapable(cr *Cred, p perm) bool { return p.uid == cr.UID || cr.Has(peercred.CapFowner) }

// inGroupOrCapable is in_group_or_capable: member of gid, or CAP_FSETID.
func inGroupOrCapable(cr *Cred, gid uint32) bool {
	return InGroup(cr, gid) || cr.Has(peercred.CapFsetid)
}

// modeAllows is acl_permission_check without ACLs: the owner class if the caller
// owns the file, else the group class when the caller is in the file's group and
// the group and other classes differ in the bits asked for, else the other class.
func modeAllows(cr *Cred, p perm, mask uint32) bool {
	mask &= 7
	mode := p.mode
	if p.uid == cr.UID {
		return mask&^(mode>>6) == 0
	}
	if mask&(mode^(mode>>3)) != 0 && InGroup(cr, p.gid) {
		mode >>= 3
	}
	return mask&^mode == 0
}

// permission is generic_permission (fs/namei.c): the mode bits, then the
// capabilities that override them: CAP_DAC_READ_SEARCH reads any file and
// searches any directory, CAP_DAC_OVERRIDE reads and writes anything and
// executes a file when any execute bit is set.
func permission(cr *Cred, p perm, mask uint32) error {
	if modeAllows(cr, p, mask) {
		return nil
	}
	if p.isDir() {
		if mask&MayWrite == 0 && cr.Has(peercred.CapDacReadSearch) {
			return nil
		}
		if cr.Has(peercred.CapDacOverride) {
			return nil
		}
		return syscall.EACCES
	}
	mask &= MayRead | MayWrite | MayExec
	if mask == MayRead && cr.Has(peercred.CapDacReadSearch) {
		return nil
	}
	if (mask&MayExec == 0 || p.mode&0o111 != 0) && cr.Has(peercred.CapDacOverride) {
		return nil
	}
	return syscall.EACCES
}

// Permission is the kernel's generic_permission for the file a and the access
// mask (MayRead, MayWrite, MayExec, or'ed): nil or EACCES. POSIX ACLs are not
// read (see the package doc).
func Permission(cr *Cred, a *libservices.Attr, mask uint32) error {
	return permission(cr, permOf(a), mask)
}

// searchable reports whether the caller may search every directory of chain
// (may_lookup on each).
func searchable(cr *Cred, chain []perm) bool {
	if cr.Has(peercred.CapDacReadSearch) || cr.Has(peercred.CapDacOverride) {
		return true
	}
	for i := range chain {
		if !modeAllows(cr, chain[i], MayExec) {
			return false
		}
	}
	return true
}

// MayCreate is may_create for a name known to be absent from directory dir:
// write and search permission on dir.
func MayCreate(cr *Cred, dir *libservices.Attr) error {
	return permission(cr, permOf(dir), MayWrite|MayExec)
}

// MayDelete is may_delete (fs/namei.c): removing or renaming away victim from
// dir needs write and search permission on dir, and in a sticky directory that
// the caller owns the victim or the directory, or holds CAP_FOWNER (EPERM); then
// the victim's type must be what the call removes (ENOTDIR, EISDIR).
func MayDelete(cr *Cred, dir, victim *libservices.Attr, isDir bool) error {
	return mayDelete(cr, permOf(dir), permOf(victim), isDir)
}

func mayDelete(cr *Cred, dir, victim perm, isDir bool) error {
	if err := permission(cr, dir, MayWrite|MayExec); err != nil {
		return err
	}
	if dir.mode&syscall.S_ISVTX != 0 && victim.uid != cr.UID && dir.uid != cr.UID && !cr.Has(peercred.CapFowner) {
		return syscall.EPERM
	}
	if isDir && !victim.isDir() {
		return syscall.ENOTDIR
	}
	if !isDir && victim.isDir() {
		return syscall.EISDIR
	}
	return nil
}

// MayMknod is vfs_mknod's check for a special file of type and mode in dir,
// once the name is known to be absent: may_create, then CAP_MKNOD for a block
// or character device (EPERM).
func MayMknod(cr *Cred, dir *libservices.Attr, mode uint32) error {
	if err := MayCreate(cr, dir); err != nil {
		return err
	}
	if t := mode & syscall.S_IFMT; (t == syscall.S_IFCHR || t == syscall.S_IFBLK) && !cr.Has(peercred.CapMknod) {
		return syscall.EPERM
	}
	return nil
}

// StripSGID is mode_strip_sgid (fs/inode.c): a new non-directory file created
// with set-group-ID and group-execute in a set-group-ID directory loses
// set-group-ID unless the caller is in the directory's group (which the file
// will get) or holds CAP_FSETID.
func StripSGID(cr *Cred, dir *libservices.Attr, mode uint32) uint32 {
	return stripSGID(cr, permOf(dir), mode)
}

func stripSGID(cr *Cred, dir perm, mode uint32) uint32 {
	if mode&(syscall.S_ISGID|0o010) != syscall.S_ISGID|0o010 {
		return mode
	}
	if mode&syscall.S_IFMT == syscall.S_IFDIR || dir.mode&syscall.S_ISGID == 0 {
		return mode
	}
	if inGroupOrCapable(cr, dir.gid) {
		return mode
	}
	return mode &^ syscall.S_ISGID
}

// NewOwner is inode_init_owner (fs/inode.c) for a file of type and mode (S_IFMT
// bits included) created by the caller in dir: the caller's uid, the caller's
// gid or, under a set-group-ID directory, the directory's gid; a new directory
// there also gets set-group-ID. mode should already have gone through StripSGID.
func NewOwner(cr *Cred, dir *libservices.Attr, mode uint32) (uid, gid, newMode uint32) {
	return newOwner(cr, permOf(dir), mode)
}

func newOwner(cr *Cred, dir perm, mode uint32) (uid, gid, newMode uint32) {
	uid, gid = cr.UID, cr.GID
	if dir.mode&syscall.S_ISGID != 0 {
		gid = dir.gid
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			mode |= syscall.S_ISGID
		}
	}
	return uid, gid, mode
}

// Protected is this host's fs.protected_* sysctls (Documentation/admin-guide/
// sysctl/fs.rst), which decide what the kernel does with links and existing
// files in sticky world-writable directories.
type Protected struct {
	Hardlinks int // fs.protected_hardlinks: 1 restricts linking others' files
	Symlinks  int // fs.protected_symlinks: 1 restricts following others' links in sticky world-writable directories
	Regular   int // fs.protected_regular: 1 or 2 restricts O_CREAT of others' regular files in sticky directories
	FIFOs     int // fs.protected_fifos: the same for FIFOs
}

// MayFollowLink is may_follow_link (fs/namei.c) for a trailing symbolic link in
// dir: with protected_symlinks, a link in a sticky world-writable directory is
// followed only by its owner, or when the directory's owner owns it (EACCES);
// no capability overrides it.
func MayFollowLink(p Protected, cr *Cred, dir, link *libservices.Attr) error {
	return mayFollowLink(p, cr, permOf(dir), permOf(link))
}

func mayFollowLink(p Protected, cr *Cred, dir, link perm) error {
	if p.Symlinks == 0 || link.uid == cr.UID {
		return nil
	}
	if dir.mode&(syscall.S_ISVTX|0o002) != syscall.S_ISVTX|0o002 {
		return nil
	}
	if dir.uid == link.uid {
		return nil
	}
	return syscall.EACCES
}

// MayLink is may_linkat (fs/namei.c): with protected_hardlinks, a caller may
// hard-link only a file it owns (or with CAP_FOWNER), or a regular file that is
// neither set-user-ID nor executable set-group-ID and that it may read and
// write (EPERM otherwise).
func MayLink(p Protected, cr *Cred, target *libservices.Attr) error {
	return mayLink(p, cr, permOf(target))
}

func mayLink(p Protected, cr *Cred, t perm) error {
	if p.Hardlinks == 0 || ownerOrCapable(cr, t) {
		return nil
	}
	safe := t.isReg() && t.mode&syscall.S_ISUID == 0 &&
		t.mode&(syscall.S_ISGID|0o010) != syscall.S_ISGID|0o010 &&
		permission(cr, t, MayRead|MayWrite) == nil
	if safe {
		return nil
	}
	return syscall.EPERM
}

// MayCreateInSticky is may_create_in_sticky (fs/namei.c): an O_CREAT open of an
// existing regular file or FIFO in a sticky directory, with protected_regular or
// protected_fifos, is refused (EACCES) when neither the caller nor the
// directory's owner owns the file and the directory is world-writable (or
// group-writable, at level 2).
func MayCreateInSticky(p Protected, cr *Cred, dir, file *libservices.Attr) error {
	return mayCreateInSticky(p, cr, permOf(dir), permOf(file))
}

func mayCreateInSticky(p Protected, cr *Cred, dir, f perm) error {
	if dir.mode&syscall.S_ISVTX == 0 {
		return nil
	}
	t := f.mode & syscall.S_IFMT
	if t == syscall.S_IFREG && p.Regular == 0 || t == syscall.S_IFIFO && p.FIFOs == 0 {
		return nil
	}
	if f.uid == dir.uid || f.uid == cr.UID {
		return nil
	}
	if dir.mode&0o002 != 0 {
		return syscall.EACCES
	}
	if dir.mode&0o020 != 0 {
		if t == syscall.S_IFIFO && p.FIFOs >= 2 || t == syscall.S_IFREG && p.Regular >= 2 {
			return syscall.EACCES
		}
	}
	return nil
}

// accMode is the access an open(2) with flags asks for (build_open_flags):
// the access mode's bits, and write for O_TRUNC.
func accMode(flags int) uint32 {
	var m uint32
	switch flags & libservices.O_ACCMODE {
	case libservices.O_RDONLY:
		m = MayRead
	case libservices.O_WRONLY:
		m = MayWrite
	case libservices.O_RDWR:
		m = MayRead | MayWrite
	}
	if flags&libservices.O_TRUNC != 0 {
		m |= MayWrite
	}
	return m
}

// MayOpen is may_open (fs/namei.c) for an existing file a opened with flags
// (not the file the open just created): ELOOP for a symbolic link, EISDIR for a
// directory opened for writing, the access bits (EACCES), then O_NOATIME only
// for the owner or CAP_FOWNER (EPERM).
func MayOpen(cr *Cred, a *libservices.Attr, flags int) error {
	return mayOpen(cr, permOf(a), flags)
}

func mayOpen(cr *Cred, p perm, flags int) error {
	acc := accMode(flags)
	switch p.mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		return syscall.ELOOP
	case syscall.S_IFDIR:
		if acc&MayWrite != 0 {
			return syscall.EISDIR
		}
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		if flags&libservices.O_TRUNC != 0 && flags&libservices.O_ACCMODE == libservices.O_RDONLY {
			acc &^= MayWrite // O_TRUNC means nothing there
		}
	}
	if err := permission(cr, p, acc); err != nil {
		return err
	}
	if flags&syscall.O_NOATIME != 0 && !ownerOrCapable(cr, p) {
		return syscall.EPERM
	}
	return nil
}

// DropSGIDOnChange is setattr_should_drop_sgid (fs/attr.c): set-group-ID goes
// with a change when group-execute is set, or, without it, when the caller is
// neither in the file's group nor holds CAP_FSETID.
func dropSGID(cr *Cred, p perm) uint32 {
	if p.mode&syscall.S_ISGID == 0 {
		return 0
	}
	if p.mode&0o010 != 0 || !inGroupOrCapable(cr, p.gid) {
		return syscall.S_ISGID
	}
	return 0
}

// KillPriv is setattr_should_drop_suidgid (fs/attr.c), what a write, truncate or
// fallocate by the caller removes from the regular file a: set-user-ID, and
// set-group-ID as DropSGID says; nothing for a caller with CAP_FSETID.
func KillPriv(cr *Cred, a *libservices.Attr) uint32 { return killPriv(cr, permOf(a)) }

func killPriv(cr *Cred, p perm) uint32 {
	if !p.isReg() || cr.Has(peercred.CapFsetid) {
		return 0
	}
	return p.mode&syscall.S_ISUID | dropSGID(cr, p)
}

// chownKill is what chown_common adds to every chown of a non-directory:
// set-user-ID always (even for a caller with CAP_FSETID), set-group-ID as
// dropSGID says.
func chownKill(cr *Cred, p perm) uint32 {
	if p.isDir() {
		return 0
	}
	return p.mode&syscall.S_ISUID | dropSGID(cr, p)
}

// Setattr checks sa, a change the caller asks for on the file a (following a
// final symbolic link), with the kernel's rules, and returns the change to make:
// sa itself, or a copy with the set-ID bits the change must clear. The rules,
// in the kernel's order: truncate needs a regular file (EISDIR, EINVAL) and
// write permission (EACCES, vfs_truncate); setting both times to "now" needs
// ownership, CAP_FOWNER or write permission (EACCES, notify_change's
// ATTR_TOUCH), any other change of times (explicit ones, or one "now" with the
// other left alone: vfs_utimes' ATTR_TIMES_SET) ownership or CAP_FOWNER
// (EPERM); then
// setattr_prepare: chown_ok, chgrp_ok (EPERM), chmod by the owner or CAP_FOWNER
// (EPERM) with set-group-ID silently dropped unless the caller is in the
// resulting group or holds CAP_FSETID. A chown of a non-directory clears
// set-user-ID (and set-group-ID as DropSGID says); a truncate by a caller
// without CAP_FSETID clears what KillPriv says.
//
// killPrivMode accepts a mode change that only clears set-ID bits from anyone
// (and adds what the change itself clears), and takes an empty change as the
// clearing a write needs: the FUSE kernel checks chmod itself
// (default_permissions), then sends the clearing that follows a write,
// truncate or chown by a non-owner as such a change, or as an empty one for
// set-group-ID without group execute, whose clearing it does not compute.
func Setattr(cr *Cred, a *libservices.Attr, sa *libservices.SetAttr, killPrivMode bool) (libservices.SetAttr, error) {
	return setattrRules(cr, permOf(a), sa, killPrivMode)
}

const timeBits = libservices.SetAtime | libservices.SetMtime | libservices.SetAtimeNow | libservices.SetMtimeNow

func setattrRules(cr *Cred, p perm, sa *libservices.SetAttr, killPrivMode bool) (libservices.SetAttr, error) {
	out := *sa
	if sa.Valid&libservices.SetSize != 0 {
		if p.isDir() {
			return out, syscall.EISDIR
		}
		if !p.isReg() {
			return out, syscall.EINVAL
		}
		if err := permission(cr, p, MayWrite); err != nil {
			return out, err
		}
	}
	if sa.Valid&timeBits != 0 && !ownerOrCapable(cr, p) {
		if sa.Valid&timeBits != libservices.SetAtimeNow|libservices.SetMtimeNow {
			return out, syscall.EPERM
		}
		if err := permission(cr, p, MayWrite); err != nil {
			return out, err
		}
	}
	if sa.Valid&libservices.SetUid != 0 && !(p.uid == cr.UID && sa.Uid == p.uid) && !cr.Has(peercred.CapChown) {
		return out, syscall.EPERM
	}
	if sa.Valid&libservices.SetGid != 0 && !cr.Has(peercred.CapChown) &&
		!(p.uid == cr.UID && (sa.Gid == p.gid || InGroup(cr, sa.Gid))) {
		return out, syscall.EPERM
	}
	var kill uint32
	if sa.Valid&(libservices.SetUid|libservices.SetGid) != 0 {
		kill |= chownKill(cr, p)
	}
	if sa.Valid&libservices.SetSize != 0 {
		kill |= killPriv(cr, p)
	}
	if killPrivMode && sa.Valid == 0 {
		// A FUSE kernel without handle_killpriv sends a write's or chown's
		// clearing itself for set-user-ID and executable set-group-ID, and for
		// the rest an empty SETATTR.
		kill |= killPriv(cr, p)
	}
	if sa.Valid&libservices.SetMode != 0 {
		clearsOnly := killPrivMode && sa.Mode&^(p.mode&0o7777) == 0 && (p.mode&0o7777)&^sa.Mode&^setID == 0
		if !clearsOnly {
			if !ownerOrCapable(cr, p) {
				return out, syscall.EPERM
			}
			gid := p.gid
			if sa.Valid&libservices.SetGid != 0 {
				gid = sa.Gid
			}
			if !inGroupOrCapable(cr, gid) {
				out.Mode &^= syscall.S_ISGID
			}
			return out, nil
		}
		out.Mode &^= kill
		return out, nil
	}
	if kill != 0 {
		out.Valid |= libservices.SetMode
		out.Mode = p.mode & 0o7777 &^ kill
	}
	return out, nil
}

// xattrKind is the namespace of an extended attribute name.
type xattrKind int

const (
	xattrOther xattrKind = iota
	xattrUser
	xattrTrusted
	xattrSecurity
	xattrSystem
)

func kindOf(name string) xattrKind {
	switch {
	case strings.HasPrefix(name, "user."):
		return xattrUser
	case strings.HasPrefix(name, "trusted."):
		return xattrTrusted
	case strings.HasPrefix(name, "security."):
		return xattrSecurity
	case strings.HasPrefix(name, "system."):
		return xattrSystem
	}
	return xattrOther
}

// capsXattr is the file capability attribute.
const capsXattr = "security.capability"

// XattrPermission is xattr_permission (fs/xattr.c) for reading (write false) or
// changing the attribute name of file a: security.* and system.* are left to
// the security rules (see Setxattr), trusted.* needs CAP_SYS_ADMIN (EPERM to
// change, ENODATA to read), user.* exists only on regular files and
// directories (EPERM, ENODATA) and on a sticky directory only its owner or
// CAP_FOWNER changes it (EPERM); then the access bits (EACCES).
func XattrPermission(cr *Cred, a *libservices.Attr, name string, write bool) error {
	return xattrPermission(cr, permOf(a), name, write)
}

func xattrPermission(cr *Cred, p perm, name string, write bool) error {
	mask := MayRead
	denied := syscall.ENODATA
	if write {
		mask, denied = MayWrite, syscall.EPERM
	}
	switch kindOf(name) {
	case xattrSecurity, xattrSystem:
		return nil
	case xattrTrusted:
		if !cr.Has(peercred.CapSysAdmin) {
			return denied
		}
		return nil
	case xattrUser:
		if !p.isReg() && !p.isDir() {
			return denied
		}
		if write && p.isDir() && p.mode&syscall.S_ISVTX != 0 && !ownerOrCapable(cr, p) {
			return syscall.EPERM
		}
	}
	return permission(cr, p, mask)
}

// xattrSecurityRules is what the security module (commoncap) and vfs_setxattr
// add for changing name: security.capability needs CAP_SETFCAP (and a value
// with a valid header, EINVAL), other security.* names CAP_SYS_ADMIN (EPERM).
// POSIX ACLs (system.posix_acl_*) are refused (EOPNOTSUPP): the checker does not
// evaluate them, so it lets none be created.
func xattrSecurityRules(cr *Cred, name string, value []byte, remove bool) error {
	switch kindOf(name) {
	case xattrSecurity:
		if name == capsXattr {
			if !remove && len(value) > 0 && !validCapsHeader(value) {
				return syscall.EINVAL
			}
			if !cr.Has(peercred.CapSetfcap) {
				return syscall.EPERM
			}
			return nil
		}
		if !cr.Has(peercred.CapSysAdmin) {
			return syscall.EPERM
		}
	case xattrSystem:
		if strings.HasPrefix(name, "system.posix_acl_") {
			return syscall.EOPNOTSUPP
		}
	}
	return nil
}

// validCapsHeader is validheader (security/commoncap.c): a VFS_CAP_REVISION_2 or
// _3 value of the size its revision says.
func validCapsHeader(v []byte) bool {
	if len(v) < 4 {
		return false
	}
	magic := uint32(v[0]) | uint32(v[1])<<8 | uint32(v[2])<<16 | uint32(v[3])<<24
	switch magic & 0xff000000 {
	case 0x02000000:
		return len(v) == 20
	case 0x03000000:
		return len(v) == 24
	}
	return false
}
