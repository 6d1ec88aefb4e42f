package passthrough

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
)

type file struct {
	fs     *FS
	fd     int
	closed atomic.Bool
}

// openFlagsAllowed are the flags Open passes to the kernel; anything else is
// dropped (O_CLOEXEC is always added) or refused (O_PATH, O_TMPFILE).
const openFlagsAllowed = unix.O_ACCMODE | unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_APPEND |
	unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_DIRECT | unix.O_SYNC | unix.O_DSYNC | unix.O_NONBLOCK |
	unix.O_LARGEFILE | unix.O_NOATIME

// Open implements libservices.FS.
func (f *FS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	if flags&(unix.O_PATH|unix.O_TMPFILE&^unix.O_DIRECTORY) != 0 || flags&unix.O_ACCMODE == 3 {
		return nil, syscall.EINVAL
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	flags &= openFlagsAllowed
	if f.readOnly && (flags&unix.O_ACCMODE != unix.O_RDONLY || flags&(unix.O_CREAT|unix.O_TRUNC) != 0) {
		if err := f.refuseReadOnly(clean, flags); err != nil {
			return nil, err
		}
		// O_RDONLY|O_CREAT of an existing non-directory: an ordinary open, as on
		// a read-only mount.
		flags &^= unix.O_CREAT
	}
	// O_CREAT|O_DIRECTORY goes to the kernel as it is: Linux >= 6.4 refuses the
	// combination (EINVAL) before looking the name up, and it never creates.
	if flags&unix.O_CREAT == 0 || flags&(unix.O_EXCL|unix.O_DIRECTORY) != 0 {
		fd, err := f.openPath(clean, flags, mode)
		if err != nil {
			return nil, err
		}
		if flags&(unix.O_CREAT|unix.O_EXCL) == unix.O_CREAT|unix.O_EXCL {
			if err := f.fixModeFd(fd, mode); err != nil {
				f.close(fd)
				return nil, err
			}
		}
		return &file{fs: f, fd: fd}, nil
	}
	// O_CREAT without O_EXCL: open the existing file, or create it exclusively so
	// that its mode can be fixed; a bounded loop covers a racing create or unlink.
	for i := 0; i < retries; i++ {
		fd, err := f.openPath(clean, flags&^unix.O_CREAT, 0)
		if err == nil {
			// Dropping O_CREAT also dropped its EISDIR for a directory (the kernel
			// refuses a directory with O_CREAT whatever the access mode). Write
			// access and O_TRUNC already get EISDIR from the kernel; only a
			// read-only open can reach here with a directory.
			if flags&(unix.O_ACCMODE|unix.O_TRUNC) == unix.O_RDONLY {
				if err := f.refuseDir(fd); err != nil {
					f.close(fd)
					return nil, err
				}
			}
			return &file{fs: f, fd: fd}, nil
		}
		if err != syscall.ENOENT {
			return nil, err
		}
		fd, err = f.openPath(clean, flags|unix.O_EXCL, mode)
		if err == nil {
			if err := f.fixModeFd(fd, mode); err != nil {
				f.close(fd)
				return nil, err
			}
			return &file{fs: f, fd: fd}, nil
		}
		if err != syscall.EEXIST {
			return nil, err
		}
		var st unix.Stat_t
		if d, base, perr := f.parent(clean); perr == nil {
			serr := f.fstatat(d.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
			f.release(d)
			if serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return nil, syscall.EEXIST // dangling symlink: see the package doc
			}
		}
	}
	return nil, syscall.EAGAIN
}

// refuseReadOnly gives, for an open of clean that may modify the branch, the
// error a read-only mount gives: the kernel's checks in its order (EINVAL for
// O_CREAT|O_DIRECTORY, lookup errors, EEXIST, ELOOP, EISDIR) and EROFS for what
// would modify. It is nil only for O_RDONLY|O_CREAT of an existing file other
// than a directory, which opens without creating anything.
func (f *FS) refuseReadOnly(clean string, flags int) error {
	if flags&unix.O_CREAT != 0 && flags&unix.O_DIRECTORY != 0 {
		return syscall.EINVAL
	}
	excl := flags&(unix.O_CREAT|unix.O_EXCL) == unix.O_CREAT|unix.O_EXCL
	pflags := unix.O_PATH | flags&(unix.O_NOFOLLOW|unix.O_DIRECTORY)
	if excl {
		pflags |= unix.O_NOFOLLOW // O_EXCL never follows a final symlink
	}
	fd, err := f.openPath(clean, pflags, 0)
	if err == syscall.ENOENT && flags&unix.O_CREAT != 0 {
		// The name is missing: creating it would modify, unless its directory is
		// missing too.
		d, _, perr := f.parent(clean)
		if perr != nil {
			return perr
		}
		f.release(d)
		return syscall.EROFS
	}
	if err != nil {
		return err
	}
	var st unix.Stat_t
	err = f.retry(sysFstat, func() error { return unix.Fstat(fd, &st) })
	f.close(fd)
	switch {
	case err != nil:
		return err
	case excl:
		return syscall.EEXIST
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return syscall.ELOOP // O_NOFOLLOW on a symbolic link
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return syscall.EISDIR // O_CREAT, O_TRUNC or write access
	case flags&(unix.O_ACCMODE|unix.O_TRUNC) != unix.O_RDONLY:
		return syscall.EROFS
	}
	return nil
}

// refuseDir is EISDIR when fd is a directory.
func (f *FS) refuseDir(fd int) error {
	var st unix.Stat_t
	if err := f.retry(sysFstat, func() error { return unix.Fstat(fd, &st) }); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return syscall.EISDIR
	}
	return nil
}

func (f *FS) fixModeFd(fd int, mode uint32) error {
	if mode&umask == 0 {
		return nil
	}
	return f.retry(sysFchmod, func() error { return unix.Fchmod(fd, mode&0o7777) })
}

func (f *FS) file(h libservices.Handle) (*file, error) {
	fh, ok := h.(*file)
	if !ok || fh == nil || fh.fs != f || fh.closed.Load() {
		return nil, syscall.EBADF
	}
	return fh, nil
}

// ReadAt implements libservices.FS.
func (f *FS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	fh, err := f.file(h)
	if err != nil {
		return 0, err
	}
	for i := 0; ; i++ {
		f.sys(sysPread)
		n, err := unix.Pread(fh.fd, p, off)
		if err == unix.EINTR && i < retries {
			continue
		}
		if err != nil {
			return 0, libservices.Errno(err)
		}
		return n, nil
	}
}

// WriteAt implements libservices.FS.
func (f *FS) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	fh, err := f.file(h)
	if err != nil {
		return 0, err
	}
	for i := 0; ; i++ {
		f.sys(sysPwrite)
		n, err := unix.Pwrite(fh.fd, p, off)
		if err == unix.EINTR && i < retries {
			continue
		}
		if err != nil {
			return 0, libservices.Errno(err)
		}
		return n, nil
	}
}

// Fstat implements libservices.FS.
func (f *FS) Fstat(h libservices.Handle, a *libservices.Attr) error {
	fh, err := f.file(h)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := f.fstat(fh.fd, &st); err != nil {
		return libservices.Errno(err)
	}
	fillAttr(&st, a)
	return nil
}

// Ftruncate implements libservices.FS.
func (f *FS) Ftruncate(h libservices.Handle, size int64) error {
	fh, err := f.file(h)
	if err != nil {
		return err
	}
	return f.retry(sysFtruncate, func() error { return unix.Ftruncate(fh.fd, size) })
}

// Fallocate implements libservices.FS.
func (f *FS) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	fh, err := f.file(h)
	if err != nil {
		return err
	}
	return f.retry(sysFallocate, func() error { return unix.Fallocate(fh.fd, mode, off, length) })
}

// Fsync implements libservices.FS.
func (f *FS) Fsync(h libservices.Handle) error {
	fh, err := f.file(h)
	if err != nil {
		return err
	}
	return f.retry(sysFsync, func() error { return unix.Fsync(fh.fd) })
}

// Fdatasync implements libservices.FS.
func (f *FS) Fdatasync(h libservices.Handle) error {
	fh, err := f.file(h)
	if err != nil {
		return err
	}
	return f.retry(sysFdatasync, func() error { return unix.Fdatasync(fh.fd) })
}

// Close implements libservices.FS.
func (f *FS) Close(h libservices.Handle) error {
	fh, ok := h.(*file)
	if !ok || fh == nil || fh.fs != f || !fh.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	// close(2) errors are reported, but the descriptor is gone either way (Linux),
	// so EINTR is not retried.
	return libservices.Errno(f.close(fh.fd))
}
