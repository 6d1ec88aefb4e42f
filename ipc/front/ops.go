package front

import (
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
	defer c.releaseDesc(idx)
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
	defer c.releaseDesc(idx)
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
	if len(oldPath) == 0 || len(newPath) == 0 {
		return syscall.ENOENT
	}
	if len(oldPath) > wire.PathMax || len(newPath) > wire.PathMax {
		return syscall.ENAMETOOLONG
	}
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.releaseDesc(idx)
	b := c.buf(idx)
	n := copy(b, oldPath)
	n += copy(b[n:], newPath)
	d := wire.Desc{Op: wire.OpRename, BufOff: c.bufOff(idx), Length: uint32(n), Aux: uint32(len(oldPath))}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// handleOp runs an op that names only a handle (and an offset for truncate).
func (c *Client) handleOp(op wire.Op, h uint64, off uint64) error {
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.releaseDesc(idx)
	d := wire.Desc{Op: op, Handle: h, Offset: off}
	status, _, err := c.roundTrip(idx, &d)
	if err != nil {
		return err
	}
	return errnoOf(status)
}

// Fsync flushes handle h.
func (c *Client) Fsync(h uint64) error { return c.handleOp(wire.OpFsync, h, 0) }

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
	defer c.releaseDesc(idx)
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
	defer c.releaseDesc(idx)
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
	defer c.releaseDesc(idx)
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
func (c *Client) ReadDir(h uint64, fn func(name []byte, typ uint8) bool) error {
	idx, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.releaseDesc(idx)
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
			name, typ, n, err := wire.NextDirent(b)
			if err != nil {
				return syscall.EIO
			}
			if !fn(name, typ) {
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
	defer c.releaseDesc(idx)
	return c.submit(idx, &d)
}

// DataArea returns the arena offsets [lo, hi) where request buffers may lie, for
// SubmitRaw.
func (c *Client) DataArea() (lo, hi uint32) { return c.dataOff, uint32(len(c.mem)) }
