package memfs

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
)

type handle struct {
	fs     *FS
	n      *inode
	flags  int
	closed atomic.Bool
}

func (f *FS) freePagesLocked(n *inode) {
	f.pages -= int64(len(n.pages))
	clear(n.pages)
}

func (f *FS) handle(h libservices.Handle) (*handle, error) {
	fh, ok := h.(*handle)
	if !ok || fh == nil || fh.fs != f || fh.closed.Load() {
		return nil, syscall.EBADF
	}
	return fh, nil
}

func (fh *handle) readable() bool { return fh.flags&libservices.O_ACCMODE != libservices.O_WRONLY }
func (fh *handle) writable() bool { return fh.flags&libservices.O_ACCMODE != libservices.O_RDONLY }

// Open implements libservices.FS.
func (f *FS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	if flags&(unix.O_PATH|0x400000 /* __O_TMPFILE */) != 0 || flags&libservices.O_ACCMODE == 3 {
		return nil, syscall.EINVAL
	}
	if flags&libservices.O_CREAT != 0 && flags&libservices.O_DIRECTORY != 0 {
		return nil, syscall.EINVAL // Linux >= 6.4
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	excl := flags&(libservices.O_CREAT|libservices.O_EXCL) == libservices.O_CREAT|libservices.O_EXCL
	follow := flags&libservices.O_NOFOLLOW == 0 && !excl
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base, n, err := f.walkLocked(clean, follow)
	if err != nil {
		return nil, err
	}
	if n == nil {
		if flags&libservices.O_CREAT == 0 {
			return nil, syscall.ENOENT
		}
		if n, err = f.createLocked(dir, base, syscall.S_IFREG|mode&0o7777); err != nil {
			return nil, err
		}
	} else {
		switch {
		case excl:
			return nil, syscall.EEXIST
		case flags&libservices.O_DIRECTORY != 0 && !n.isDir():
			return nil, syscall.ENOTDIR
		case n.isSymlink():
			return nil, syscall.ELOOP
		case n.isDir() && (flags&libservices.O_ACCMODE != libservices.O_RDONLY || flags&(libservices.O_CREAT|libservices.O_TRUNC) != 0):
			return nil, syscall.EISDIR
		}
		// Linux truncates whatever the access mode: O_TRUNC asks for write
		// permission on its own, and the handle stays read-only.
		if flags&libservices.O_TRUNC != 0 && n.isReg() {
			if err := f.truncateLocked(n, 0); err != nil {
				return nil, err
			}
		}
	}
	n.opens++
	return &handle{fs: f, n: n, flags: flags}, nil
}

// ReadAt implements libservices.FS.
func (f *FS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	fh, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	if !fh.readable() {
		return 0, syscall.EBADF
	}
	if off < 0 || off+int64(len(p)) < 0 {
		return 0, syscall.EINVAL
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := fh.n
	if n.isDir() {
		return 0, syscall.EISDIR
	}
	if off >= n.size {
		return 0, nil
	}
	if rest := n.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		idx, in := pos/PageSize, int(pos%PageSize)
		chunk := min(PageSize-in, len(p)-done)
		if pg := n.pages[idx]; pg != nil {
			copy(p[done:done+chunk], pg[in:in+chunk])
		} else {
			clear(p[done : done+chunk])
		}
		done += chunk
	}
	return done, nil
}

// WriteAt implements libservices.FS.
func (f *FS) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	fh, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	if !fh.writable() {
		return 0, syscall.EBADF
	}
	if off < 0 || off+int64(len(p)) < 0 {
		return 0, syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := fh.n
	if fh.flags&libservices.O_APPEND != 0 {
		off = n.size
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= MaxFileSize {
		return 0, syscall.EFBIG
	}
	if rest := MaxFileSize - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		idx, in := pos/PageSize, int(pos%PageSize)
		chunk := min(PageSize-in, len(p)-done)
		pg := n.pages[idx]
		if pg == nil {
			if f.pages >= f.maxPages {
				break
			}
			pg = new(page)
			n.pages[idx] = pg
			f.pages++
		}
		copy(pg[in:in+chunk], p[done:done+chunk])
		done += chunk
	}
	if done == 0 {
		return 0, syscall.ENOSPC
	}
	if end := off + int64(done); end > n.size {
		n.size = end
	}
	now := f.now()
	n.mtime, n.ctime = now, now
	return done, nil
}

// Fstat implements libservices.FS.
func (f *FS) Fstat(h libservices.Handle, a *libservices.Attr) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	fh.n.fill(a)
	return nil
}

// Ftruncate implements libservices.FS.
func (f *FS) Ftruncate(h libservices.Handle, size int64) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	if !fh.writable() || !fh.n.isReg() {
		return syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.truncateLocked(fh.n, size)
}

// Fallocate implements libservices.FS.
func (f *FS) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	if !fh.writable() {
		return syscall.EBADF
	}
	if off < 0 || length <= 0 || off+length < 0 {
		return syscall.EINVAL
	}
	if fh.n.isDir() {
		return syscall.EISDIR
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := fh.n
	end := off + length
	switch mode {
	case 0, libservices.FallocKeepSize:
		if end > MaxFileSize {
			return syscall.EFBIG
		}
		need := int64(0)
		for idx := off / PageSize; idx <= (end-1)/PageSize; idx++ {
			if n.pages[idx] == nil {
				need++
			}
		}
		if f.pages+need > f.maxPages {
			return syscall.ENOSPC
		}
		for idx := off / PageSize; idx <= (end-1)/PageSize; idx++ {
			if n.pages[idx] == nil {
				n.pages[idx] = new(page)
				f.pages++
			}
		}
		if mode == 0 && end > n.size {
			n.size = end
		}
	case libservices.FallocPunchHole | libservices.FallocKeepSize:
		if end > n.size {
			end = n.size
		}
		for pos := off; pos < end; {
			idx, in := pos/PageSize, pos%PageSize
			chunk := min(PageSize-in, end-pos)
			if pg := n.pages[idx]; pg != nil {
				if chunk == PageSize {
					delete(n.pages, idx)
					f.pages--
				} else {
					clear(pg[in : in+chunk])
				}
			}
			pos += chunk
		}
	default:
		return syscall.EOPNOTSUPP
	}
	now := f.now()
	n.mtime, n.ctime = now, now
	return nil
}

// Fsync implements libservices.FS; memory has nothing below it to sync to.
func (f *FS) Fsync(h libservices.Handle) error {
	_, err := f.handle(h)
	return err
}

// Fdatasync implements libservices.FS.
func (f *FS) Fdatasync(h libservices.Handle) error {
	_, err := f.handle(h)
	return err
}

// Close implements libservices.FS.
func (f *FS) Close(h libservices.Handle) error {
	fh, ok := h.(*handle)
	if !ok || fh == nil || fh.fs != f || !fh.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fh.n.opens--
	if fh.n.opens == 0 && fh.n.nlink == 0 {
		f.freePagesLocked(fh.n)
	}
	return nil
}
