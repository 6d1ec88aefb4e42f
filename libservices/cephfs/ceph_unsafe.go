//go:build ceph

package cephfs

/*
#cgo CPPFLAGS: -D_FILE_OFFSET_BITS=64
#cgo LDFLAGS: -lcephfs
#include <stdlib.h>
#include <fcntl.h>
#include <cephfs/libcephfs.h>
*/
import "C"

import (
	"syscall"
	"unsafe"

	gocephfs "github.com/ceph/go-ceph/cephfs"

	"github.com/polytropon/polytropon/libservices"
)

// goCephMount mirrors go-ceph v0.34.0's MountInfo (one field, the libcephfs
// handle). go-ceph has no ceph_setattrx (Setattr's times, in one call with the
// rest) nor ceph_umask, and its Statx allocates its result; this package calls
// those few functions itself on the same mount. go.mod pins go-ceph, and
// TestRawMountPointer checks the layout against the live mount.
type goCephMount struct {
	mount *C.struct_ceph_mount_info
}

func rawMount(m *gocephfs.MountInfo) *C.struct_ceph_mount_info {
	return (*goCephMount)(unsafe.Pointer(m)).mount
}

func errnoOf(ret C.int) error {
	if ret >= 0 {
		return nil
	}
	return syscall.Errno(-ret)
}

// setUmask0 turns the client's umask off: the contract applies none.
func setUmask0(m *gocephfs.MountInfo) { C.ceph_umask(rawMount(m), 0) }

func isMounted(m *gocephfs.MountInfo) bool { return C.ceph_is_mounted(rawMount(m)) != 0 }

const statxWant = C.CEPH_STATX_BASIC_STATS

func fillAttr(stx *C.struct_ceph_statx, a *libservices.Attr) {
	*a = libservices.Attr{
		Ino: uint64(stx.stx_ino), Mode: uint32(stx.stx_mode), Nlink: uint32(stx.stx_nlink),
		Uid: uint32(stx.stx_uid), Gid: uint32(stx.stx_gid), Rdev: uint64(stx.stx_rdev),
		Size: int64(stx.stx_size), Blocks: int64(stx.stx_blocks), Blksize: int32(stx.stx_blksize),
		Atime: libservices.Timespec{Sec: int64(stx.stx_atime.tv_sec), Nsec: int64(stx.stx_atime.tv_nsec)},
		Mtime: libservices.Timespec{Sec: int64(stx.stx_mtime.tv_sec), Nsec: int64(stx.stx_mtime.tv_nsec)},
		Ctime: libservices.Timespec{Sec: int64(stx.stx_ctime.tv_sec), Nsec: int64(stx.stx_ctime.tv_nsec)},
	}
}

// statx fills a for path; nofollow is Lstat.
func statx(m *gocephfs.MountInfo, path string, nofollow bool, a *libservices.Attr) error {
	return statxMask(m, path, nofollow, a, statxWant)
}

// statType fills only a.Mode (and Ino): what path resolution needs. Asking
// libcephfs for less lets it answer from the capabilities it holds (the
// directory's mtime and size need Fs caps the MDS rarely grants on
// directories, so a full statx of a directory is an MDS round trip).
func statType(m *gocephfs.MountInfo, path string, a *libservices.Attr) error {
	return statxMask(m, path, true, a, C.CEPH_STATX_MODE|C.CEPH_STATX_INO)
}

func statxMask(m *gocephfs.MountInfo, path string, nofollow bool, a *libservices.Attr, want C.uint) error {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var stx C.struct_ceph_statx
	flags := C.uint(0)
	if nofollow {
		flags = C.AT_SYMLINK_NOFOLLOW
	}
	if err := errnoOf(C.ceph_statx(rawMount(m), cp, &stx, want, flags)); err != nil {
		return err
	}
	fillAttr(&stx, a)
	return nil
}

func fstatx(m *gocephfs.MountInfo, fd C.int, a *libservices.Attr) error {
	var stx C.struct_ceph_statx
	if err := errnoOf(C.ceph_fstatx(rawMount(m), fd, &stx, statxWant, 0)); err != nil {
		return err
	}
	fillAttr(&stx, a)
	return nil
}

// setattr is Setattr in one ceph_setattrx call, following a final symlink.
func setattr(m *gocephfs.MountInfo, path string, sa *libservices.SetAttr) error {
	var stx C.struct_ceph_statx
	mask := C.int(0)
	if sa.Valid&libservices.SetMode != 0 {
		mask |= C.CEPH_SETATTR_MODE
		stx.stx_mode = C.uint16_t(sa.Mode & 0o7777)
	}
	if sa.Valid&libservices.SetUid != 0 {
		mask |= C.CEPH_SETATTR_UID
		stx.stx_uid = C.uint32_t(sa.Uid)
	}
	if sa.Valid&libservices.SetGid != 0 {
		mask |= C.CEPH_SETATTR_GID
		stx.stx_gid = C.uint32_t(sa.Gid)
	}
	if sa.Valid&libservices.SetSize != 0 {
		if sa.Size < 0 {
			return syscall.EINVAL
		}
		mask |= C.CEPH_SETATTR_SIZE
		stx.stx_size = C.uint64_t(sa.Size)
	}
	if sa.Valid&libservices.SetAtime != 0 {
		mask |= C.CEPH_SETATTR_ATIME
		stx.stx_atime.tv_sec = C.time_t(sa.Atime.Sec)
		stx.stx_atime.tv_nsec = C.long(sa.Atime.Nsec)
	}
	if sa.Valid&libservices.SetMtime != 0 {
		mask |= C.CEPH_SETATTR_MTIME
		stx.stx_mtime.tv_sec = C.time_t(sa.Mtime.Sec)
		stx.stx_mtime.tv_nsec = C.long(sa.Mtime.Nsec)
	}
	if sa.Valid&libservices.SetAtimeNow != 0 {
		mask |= C.CEPH_SETATTR_ATIME_NOW
	}
	if sa.Valid&libservices.SetMtimeNow != 0 {
		mask |= C.CEPH_SETATTR_MTIME_NOW
	}
	if mask == 0 {
		return nil
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	return errnoOf(C.ceph_setattrx(rawMount(m), cp, &stx, mask, 0))
}

// fileFd is the descriptor inside go-ceph's File (v0.34.0: mount, then fd).
func fileFd(f *gocephfs.File) C.int {
	return (*struct {
		mount *gocephfs.MountInfo
		fd    C.int
	})(unsafe.Pointer(f)).fd
}

// errEEXIST is for tests that tolerate an existing directory.
const errEEXIST = syscall.EEXIST

// linkNoFollow is link(2) without AT_SYMLINK_FOLLOW: ceph_link follows a final
// symlink of oldpath, so the low-level calls link the inode oldpath names
// itself into newdir as newname. Both paths are symlink-free (resolve).
func linkNoFollow(m *gocephfs.MountInfo, oldpath, newdir, newname string) error {
	cm := rawMount(m)
	perms := C.ceph_mount_perms(cm)
	co, cd, cn := C.CString(oldpath), C.CString(newdir), C.CString(newname)
	defer C.free(unsafe.Pointer(co))
	defer C.free(unsafe.Pointer(cd))
	defer C.free(unsafe.Pointer(cn))
	var stx C.struct_ceph_statx
	var in, dir *C.struct_Inode
	if err := errnoOf(C.ceph_ll_walk(cm, co, &in, &stx, 0, C.AT_SYMLINK_NOFOLLOW, perms)); err != nil {
		return err
	}
	defer C.ceph_ll_put(cm, in)
	if err := errnoOf(C.ceph_ll_walk(cm, cd, &dir, &stx, 0, 0, perms)); err != nil {
		return err
	}
	defer C.ceph_ll_put(cm, dir)
	return errnoOf(C.ceph_ll_link(cm, in, dir, cn, perms))
}

func statxMaskFor(full bool) C.uint {
	if full {
		return statxWant
	}
	return C.CEPH_STATX_MODE | C.CEPH_STATX_INO
}
