package front

import (
	"bytes"
	"syscall"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

func errnoOf(status int32) error {
	if status < 0 {
		return syscall.Errno(-status)
	}
	return nil
}

// Nop sends an empty request: the transport's round trip and nothing else.
func (c *Client) Nop() error {
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	d := wire.Desc{Op: wire.OpNop}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// putPath copies path into the descriptor's buffer. Paths are metadata, not payload:
// they are copied with the builtin (a string source) rather than shm.CopyData.
func (c *Client) putPath(idx uint32, path string) (uint32, error) {
	if len(path) == 0 {
		return 0, syscall.ENOENT
	}
	if len(path) > wire.PathMax {
		return 0, syscall.ENAMETOOLONG
	}
	return uint32(copy(c.buf(idx), path)), nil
}

// pathOp runs an op whose request is one path.
func (c *Client) pathOp(op wire.Op, path string, flags, mode uint32, out func(buf []byte)) (uint64, error) {
	idx, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.done(idx)
	n, err := c.putPath(idx, path)
	if err != nil {
		return 0, err
	}
	d := wire.Desc{Op: op, Flags: flags, Mode: mode, BufOff: c.bufOff(idx), Length: c.slotSize, Aux: n}
	status, result, err := c.roundTrip(idx, &d)
	if err != nil {
		return 0, err
	}
	if err := errnoOf(status); err != nil {
		return 0, err
	}
	if out != nil {
		out(c.buf(idx))
	}
	return result, nil
}

// Stat returns the attributes of path.
func (c *Client) Stat(path string) (wire.Stat, error) {
	var st wire.Stat
	_, err := c.pathOp(wire.OpStat, path, 0, 0, func(b []byte) { st.Get(b) })
	return st, err
}

// Lstat returns the attributes of path, not following a final symbolic link.
func (c *Client) Lstat(path string) (wire.Stat, error) {
	var st wire.Stat
	_, err := c.pathOp(wire.OpLstat, path, 0, 0, func(b []byte) { st.Get(b) })
	return st, err
}

// Statfs describes the filesystem instance that holds path.
func (c *Client) Statfs(path string) (wire.Statfs, error) {
	var st wire.Statfs
	_, err := c.pathOp(wire.OpStatfs, path, 0, 0, func(b []byte) { st.Get(b) })
	return st, err
}

// Readlink returns the target of the symbolic link path.
func (c *Client) Readlink(path string) (string, error) {
	var target string
	_, err := c.pathStatusOp(wire.OpReadlink, path, func(b []byte, n int) { target = string(b[:n]) })
	return target, err
}

// Listxattr returns the names of the extended attributes of path.
func (c *Client) Listxattr(path string) ([]string, error) {
	var names []string
	_, err := c.pathStatusOp(wire.OpListxattr, path, func(b []byte, n int) {
		for _, name := range bytes.Split(b[:n], []byte{0}) {
			if len(name) > 0 {
				names = append(names, string(name))
			}
		}
	})
	return names, err
}

// Lock takes the service's advisory lock on path (which need not exist) and returns
// its handle; CloseHandle releases it, and so does this client's disconnection.
// EAGAIN when another holder has it.
func (c *Client) Lock(path string) (uint64, error) {
	return c.pathOp(wire.OpLock, path, 0, 0, nil)
}

// pathStatusOp runs a path op whose reply is Status bytes at the start of the buffer.
func (c *Client) pathStatusOp(op wire.Op, path string, out func(b []byte, n int)) (int, error) {
	idx, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.done(idx)
	n, err := c.putPath(idx, path)
	if err != nil {
		return 0, err
	}
	d := wire.Desc{Op: op, BufOff: c.bufOff(idx), Length: c.slotSize, Aux: n}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return 0, err
	}
	if err := errnoOf(status); err != nil {
		return 0, err
	}
	if status > int32(c.slotSize) {
		return 0, syscall.EIO
	}
	out(c.buf(idx), int(status))
	return int(status), nil
}

// Open opens path with flags (syscall.O_*) and mode (for O_CREAT) and returns a handle.
func (c *Client) Open(path string, flags int, mode uint32) (uint64, error) {
	return c.pathOp(wire.OpOpen, path, uint32(flags), mode, nil)
}

// Create creates path exclusively and opens it read-write.
func (c *Client) Create(path string, mode uint32) (uint64, error) {
	return c.pathOp(wire.OpCreate, path, 0, mode, nil)
}

// Mkdir creates directory path.
func (c *Client) Mkdir(path string, mode uint32) error {
	_, err := c.pathOp(wire.OpMkdir, path, 0, mode, nil)
	return err
}

// Unlink removes file path.
func (c *Client) Unlink(path string) error {
	_, err := c.pathOp(wire.OpUnlink, path, 0, 0, nil)
	return err
}

// Rmdir removes empty directory path.
func (c *Client) Rmdir(path string) error {
	_, err := c.pathOp(wire.OpRmdir, path, 0, 0, nil)
	return err
}

// Rename moves oldPath to newPath.
func (c *Client) Rename(oldPath, newPath string) error {
	return c.twoPathOp(wire.OpRename, oldPath, newPath)
}

// Link makes newPath a hard link to oldPath.
func (c *Client) Link(oldPath, newPath string) error {
	return c.twoPathOp(wire.OpLink, oldPath, newPath)
}

// Symlink creates path as a symbolic link to target.
func (c *Client) Symlink(target, path string) error {
	return c.twoPathOp(wire.OpSymlink, target, path)
}

func (c *Client) twoPathOp(op wire.Op, first, second string) error {
	if len(first) == 0 || len(second) == 0 {
		return syscall.ENOENT
	}
	if len(first) > wire.PathMax || len(second) > wire.PathMax {
		return syscall.ENAMETOOLONG
	}
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	b := c.buf(idx)
	n := copy(b, first)
	n += copy(b[n:], second)
	d := wire.Desc{Op: op, BufOff: c.bufOff(idx), Length: uint32(n), Aux: uint32(len(first))}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// Setattr changes the attributes of path selected by valid (the libservices.Set*
// bits): mode, size and rec's owner and times.
func (c *Client) Setattr(path string, valid, mode uint32, size int64, rec *wire.Setattr) error {
	if len(path) == 0 {
		return syscall.ENOENT
	}
	if len(path) > wire.PathMax {
		return syscall.ENAMETOOLONG
	}
	if size < 0 {
		return syscall.EINVAL
	}
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	b := c.buf(idx)
	rec.Put(b)
	n := copy(b[wire.SetattrSize:], path)
	d := wire.Desc{Op: wire.OpSetattr, Flags: valid, Mode: mode, Offset: uint64(size),
		BufOff: c.bufOff(idx), Length: uint32(wire.SetattrSize + n), Aux: uint32(n)}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// xattrOp puts path || name || value in the buffer and runs op; reply, when not nil,
// receives the status and the buffer.
func (c *Client) xattrOp(op wire.Op, path, name string, value []byte, flags uint32, capacity int, reply func(b []byte, n int)) (int, error) {
	switch {
	case len(path) == 0:
		return 0, syscall.ENOENT
	case len(path) > wire.PathMax:
		return 0, syscall.ENAMETOOLONG
	case len(name) == 0:
		return 0, syscall.EINVAL
	case len(name) > wire.NameMax:
		return 0, syscall.ERANGE
	case len(path)+len(name)+len(value) > int(c.slotSize):
		return 0, syscall.E2BIG
	}
	if len(path)+len(name)+capacity > int(c.slotSize) {
		capacity = int(c.slotSize) - len(path) - len(name)
	}
	idx, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.done(idx)
	b := c.buf(idx)
	n := copy(b, path)
	n += copy(b[n:], name)
	n += copy(b[n:], value)
	// A getxattr reply goes after the name, in capacity bytes.
	d := wire.Desc{Op: op, Flags: flags, BufOff: c.bufOff(idx), Length: uint32(n + capacity),
		Aux: uint32(len(path)), Offset: uint64(len(name))}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return 0, err
	}
	if err := errnoOf(status); err != nil {
		return 0, err
	}
	if reply != nil {
		if int(status) > capacity {
			return 0, syscall.EIO
		}
		reply(b[n:], int(status))
	}
	return int(status), nil
}

// Getxattr copies the value of attribute name of path into dest and returns its
// length; with an empty dest it returns the length only. Values are bounded by the
// descriptor's buffer (MaxIO, 64 KiB by default, Linux's XATTR_SIZE_MAX).
func (c *Client) Getxattr(path, name string, dest []byte) (int, error) {
	if len(dest) == 0 {
		return c.xattrOp(wire.OpGetxattr, path, name, nil, wire.XattrSizeOnly, 0, nil)
	}
	return c.xattrOp(wire.OpGetxattr, path, name, nil, 0, len(dest), func(b []byte, n int) { copy(dest, b[:n]) })
}

// Setxattr sets attribute name of path to value; flags is 0, wire.XattrCreate or
// wire.XattrReplace.
func (c *Client) Setxattr(path, name string, value []byte, flags int) error {
	_, err := c.xattrOp(wire.OpSetxattr, path, name, value, uint32(flags), 0, nil)
	return err
}

// Removexattr removes attribute name of path.
func (c *Client) Removexattr(path, name string) error {
	_, err := c.xattrOp(wire.OpRemovexattr, path, name, nil, 0, 0, nil)
	return err
}

// Mount is one entry of the service's mount table.
type Mount struct {
	Name, Prefix string
}

// Mounts returns the service's mount table.
func (c *Client) Mounts() ([]Mount, error) {
	var ms []Mount
	err := c.bufOp(wire.OpMounts, func(b []byte) error {
		for len(b) > 0 {
			name, prefix, n, err := wire.NextMount(b)
			if err != nil {
				return syscall.EIO
			}
			ms = append(ms, Mount{string(name), string(prefix)})
			b = b[n:]
		}
		return nil
	})
	return ms, err
}

// Status returns the service's status document (JSON).
func (c *Client) Status() ([]byte, error) {
	var out []byte
	err := c.bufOp(wire.OpStatus, func(b []byte) error {
		out = append([]byte(nil), b...)
		return nil
	})
	return out, err
}

func (c *Client) bufOp(op wire.Op, parse func(b []byte) error) error {
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	d := wire.Desc{Op: op, BufOff: c.bufOff(idx), Length: c.slotSize}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	if err := errnoOf(status); err != nil {
		return err
	}
	if status > int32(c.slotSize) {
		return syscall.EIO
	}
	return parse(c.buf(idx)[:status])
}

// handleOp runs an op that names only a handle (and an offset for truncate).
func (c *Client) handleOp(op wire.Op, h uint64, off uint64) error {
	return c.handleFlagsOp(op, h, off, 0)
}

func (c *Client) handleFlagsOp(op wire.Op, h uint64, off uint64, flags uint32) error {
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	d := wire.Desc{Op: op, Handle: h, Offset: off, Flags: flags}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// Fsync flushes handle h.
func (c *Client) Fsync(h uint64) error { return c.handleOp(wire.OpFsync, h, 0) }

// Fdatasync flushes the data of handle h.
func (c *Client) Fdatasync(h uint64) error {
	return c.handleFlagsOp(wire.OpFsync, h, 0, wire.FsyncData)
}

// Fallocate is fallocate(2) on handle h (mode: KEEP_SIZE, PUNCH_HOLE bits).
func (c *Client) Fallocate(h uint64, mode uint32, off, length int64) error {
	if off < 0 || length <= 0 {
		return syscall.EINVAL
	}
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	wire.PutU64(c.buf(idx), uint64(length))
	d := wire.Desc{Op: wire.OpFallocate, Handle: h, Offset: uint64(off), Flags: mode, BufOff: c.bufOff(idx), Length: 8}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// CloseHandle closes handle h.
func (c *Client) CloseHandle(h uint64) error { return c.handleOp(wire.OpClose, h, 0) }

// Truncate sets the size of the file behind h.
func (c *Client) Truncate(h uint64, size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	return c.handleOp(wire.OpTruncate, h, uint64(size))
}

// Fstat returns the attributes of the file behind h.
func (c *Client) Fstat(h uint64) (wire.Stat, error) {
	var st wire.Stat
	idx, err := c.acquire()
	if err != nil {
		return st, err
	}
	defer c.done(idx)
	d := wire.Desc{Op: wire.OpFstat, Handle: h, BufOff: c.bufOff(idx), Length: wire.StatSize}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return st, err
	}
	if err := errnoOf(status); err != nil {
		return st, err
	}
	st.Get(c.buf(idx))
	return st, nil
}

// ReadAt reads up to len(p) bytes at off from h, in requests of at most MaxIO bytes;
// it returns fewer bytes only at end of file (n < len(p) and a nil error).
func (c *Client) ReadAt(h uint64, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	idx, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.done(idx)
	done := 0
	for done < len(p) {
		want := min(len(p)-done, int(c.slotSize))
		d := wire.Desc{Op: wire.OpRead, Handle: h, Offset: uint64(off) + uint64(done), BufOff: c.bufOff(idx), Length: uint32(want)}
		status, _, err := c.roundTrip(idx, &d)
		if err != nil {
			return done, err
		}
		if err := errnoOf(status); err != nil {
			return done, err
		}
		got := min(int(status), want)
		done += shm.CopyData(p[done:done+got], c.buf(idx))
		if got < want {
			break
		}
	}
	return done, nil
}

// WriteAt writes p at off to h, in requests of at most MaxIO bytes.
func (c *Client) WriteAt(h uint64, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	idx, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.done(idx)
	done := 0
	for done < len(p) {
		n := shm.CopyData(c.buf(idx), p[done:])
		d := wire.Desc{Op: wire.OpWrite, Handle: h, Offset: uint64(off) + uint64(done), BufOff: c.bufOff(idx), Length: uint32(n)}
		status, _, err := c.roundTrip(idx, &d)
		if err != nil {
			return done, err
		}
		if err := errnoOf(status); err != nil {
			return done, err
		}
		if status == 0 {
			return done, syscall.EIO // no progress: a service bug, not a loop forever
		}
		done += min(int(status), n)
	}
	return done, nil
}

// ReadDir calls fn for the entries of the directory behind h, starting at cookie 0,
// until fn returns false or the directory ends. The name slice is only valid during
// fn.
func (c *Client) ReadDir(h uint64, fn func(name []byte, typ uint8, ino uint64) bool) error {
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.done(idx)
	var cookie uint64
	// Each batch advances the cookie; the bound guards against a service that
	// never ends a directory.
	for range 1 << 20 {
		d := wire.Desc{Op: wire.OpReaddir, Handle: h, Offset: cookie, BufOff: c.bufOff(idx), Length: c.slotSize}
		status, next, err := c.roundTrip(idx, &d)
		if err != nil {
			return err
		}
		if err := errnoOf(status); err != nil {
			return err
		}
		if status == 0 {
			return nil
		}
		b := c.buf(idx)[:min(int(status), int(c.slotSize))]
		for len(b) > 0 {
			name, typ, ino, n, err := wire.NextDirent(b)
			if err != nil {
				return syscall.EIO
			}
			if !fn(name, typ, ino) {
				return nil
			}
			b = b[n:]
		}
		if next <= cookie {
			return syscall.EIO
		}
		cookie = next
	}
	return syscall.EIO
}

// SubmitRaw sends d exactly as given, Version and buffer fields included, in one of
// the client's descriptors, and returns the service's status and result. It is for
// tests and diagnostic tools that probe the service's validation with malformed
// descriptors; applications use the typed calls.
func (c *Client) SubmitRaw(d wire.Desc) (status int32, result uint64, err error) {
	idx, err := c.acquire()
	if err != nil {
		return 0, 0, err
	}
	defer c.done(idx)
	return c.submit(idx, &d)
}

// DataArea returns the arena offsets [lo, hi) where request buffers may lie, for
// SubmitRaw.
func (c *Client) DataArea() (lo, hi uint32) { return c.dataOff, uint32(len(c.mem)) }
