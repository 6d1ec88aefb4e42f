package fslib

import (
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// Locker is an optional capability of the FS under a Client: exclusive locks on
// files, held until released, excluding every holder the FS knows of (for the
// tenant's service: every client process, which is what makes two processes
// opening one Pebble store safe).
//
// Contract, for implementers (the remote FS):
//   - Lock(name) is called after the Client made sure the file exists (it creates
//     it empty, mode 0644, if missing); the Locker need not create it.
//   - The lock is exclusive: while it is held, another Lock of the same file, by
//     this or any other client and through any name of the file, fails with
//     syscall.EAGAIN and changes nothing. Lock does not wait.
//   - Errors are syscall.Errno only (ENOENT, ENOTDIR, EISDIR, EAGAIN, ...), as
//     for every libservices.FS method.
//   - Close of the returned io.Closer releases the lock; a second Close returns
//     syscall.EBADF. A lock is also released when its holder goes away (the client
//     process dies or disconnects), so that a crashed process does not lock its
//     successor out.
type Locker interface {
	Lock(name string) (io.Closer, error)
}

// lockTable is the in-process lock of a Client whose FS has no Locker: it excludes
// lockers within this Client only.
type lockTable struct {
	mu   sync.Mutex
	held map[string]bool // by clean name
}

// Lock takes an exclusive lock on file name, creating the file (empty, mode 0644,
// no umask) if it does not exist and truncating it once the lock is held, as
// Pebble's vfs.FS.Lock asks. A lock already held returns a PathError wrapping
// syscall.EAGAIN. Close the returned io.Closer to release the lock.
//
// If the FS implements Locker the lock is the FS's, and excludes other clients
// and processes. Otherwise it is an in-process lock of this Client, keyed by the
// cleaned name: it excludes nothing outside the Client (another process, another
// Client on the same FS, or another name of the same file), and cross-process
// exclusion is then up to the FS, which has none to offer.
func (c *Client) Lock(name string) (io.Closer, error) {
	if c.closed.Load() {
		return nil, closedErr("lock", name)
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, pathErr("lock", name, err)
	}
	h, err := c.fs.Open(name, libservices.O_WRONLY|libservices.O_CREAT, 0o644)
	if err != nil {
		return nil, pathErr("lock", name, err)
	}
	var release func() error
	if lk, ok := c.fs.(Locker); ok {
		l, err := lk.Lock(name)
		if err != nil {
			c.fs.Close(h)
			return nil, pathErr("lock", name, err)
		}
		release = l.Close
	} else {
		c.locks.mu.Lock()
		if c.locks.held[clean] {
			c.locks.mu.Unlock()
			c.fs.Close(h)
			return nil, &fs.PathError{Op: "lock", Path: name, Err: syscall.EAGAIN}
		}
		if c.locks.held == nil {
			c.locks.held = map[string]bool{}
		}
		c.locks.held[clean] = true
		c.locks.mu.Unlock()
		release = func() error {
			c.locks.mu.Lock()
			delete(c.locks.held, clean)
			c.locks.mu.Unlock()
			return nil
		}
	}
	// Truncate only once the lock is ours: a holder's lock file is not touched.
	err = c.fs.Ftruncate(h, 0)
	if cerr := c.fs.Close(h); err == nil {
		err = cerr
	}
	if err != nil {
		release()
		return nil, pathErr("lock", name, err)
	}
	return &fileLock{name: name, release: release}, nil
}

type fileLock struct {
	name    string
	once    sync.Once
	release func() error
}

// Close releases the lock; a second Close returns os.ErrClosed.
func (l *fileLock) Close() error {
	err := error(os.ErrClosed)
	l.once.Do(func() { err = libservices.Errno(l.release()) })
	if err != nil {
		return &fs.PathError{Op: "unlock", Path: l.name, Err: err}
	}
	return nil
}
