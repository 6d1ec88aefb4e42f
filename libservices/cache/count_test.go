package cache

import (
	"sync/atomic"

	"github.com/polytropon/polytropon/libservices"
)

// countFS counts the metadata calls that reach the FS below a cache: what the
// name and attribute cache saves. It forwards the optional capabilities the
// cache asks its inner FS for.
type countFS struct {
	libservices.FS
	lstat, stat, fstat, open, readdir, readlink atomic.Int64
}

func (c *countFS) Lstat(name string, a *libservices.Attr) error {
	c.lstat.Add(1)
	return c.FS.Lstat(name, a)
}

func (c *countFS) Stat(name string, a *libservices.Attr) error {
	c.stat.Add(1)
	return c.FS.Stat(name, a)
}

func (c *countFS) Fstat(h libservices.Handle, a *libservices.Attr) error {
	c.fstat.Add(1)
	return c.FS.Fstat(h, a)
}

func (c *countFS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	c.open.Add(1)
	return c.FS.Open(name, flags, mode)
}

func (c *countFS) ReadDir(name string) ([]libservices.DirEntry, error) {
	c.readdir.Add(1)
	return c.FS.ReadDir(name)
}

func (c *countFS) Readlink(name string) (string, error) {
	c.readlink.Add(1)
	return c.FS.Readlink(name)
}

// lookups is the number of calls that look a name or a file's attributes up
// (everything counted but Open).
func (c *countFS) lookups() int64 {
	return c.lstat.Load() + c.stat.Load() + c.fstat.Load() + c.readdir.Load() + c.readlink.Load()
}

func (c *countFS) reset() {
	for _, n := range []*atomic.Int64{&c.lstat, &c.stat, &c.fstat, &c.open, &c.readdir, &c.readlink} {
		n.Store(0)
	}
}

func (c *countFS) Reshapes() (uint64, bool) {
	if r, ok := c.FS.(libservices.Reshaper); ok {
		return r.Reshapes()
	}
	return 0, false
}

func (c *countFS) Identity() [2]uint64 {
	if id, ok := c.FS.(libservices.Identifier); ok {
		return id.Identity()
	}
	return [2]uint64{0xc0, 1}
}

func (c *countFS) CloseFS() error {
	if cl, ok := c.FS.(libservices.Closer); ok {
		return cl.CloseFS()
	}
	return nil
}
