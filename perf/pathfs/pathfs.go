// Package pathfs is the file API a measurement uses on each path an
// application reaches its files by: package os on the kernel and FUSE paths
// (OS) and an fslib client on the direct path (Dial), behind one interface,
// FS, so that perf/pathperf and perf/harness time the same calls on every
// path. It adds nothing on the way: each method is the path's own call, and a
// Pebble store on a path gets that path's vfs (PebbleOptions).
//
// Contract: errors are the path's own (*fs.PathError with syscall.Errno, as
// package os and fslib return them). An FS from Dial is one fslib client and
// is safe for concurrent use as fslib.Client is; OS holds no state. Lock
// order: none of its own. It measures nothing itself.
package pathfs

import (
	"io"
	"io/fs"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/fslib/pebblevfs"
)

// File is what the measured operations need of an open file: os.File and
// fslib.File both have it.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	Sync() error
}

// FS is one path's file API: package os (kernel and fuse paths, on different
// directories) or an fslib.Client (direct path). Names are the path's own.
type FS interface {
	Stat(name string) (fs.FileInfo, error)
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Remove(name string) error
	RemoveAll(name string) error
	Mkdir(name string, perm fs.FileMode) error
	MkdirAll(name string, perm fs.FileMode) error
	WriteFile(name string, data []byte, perm fs.FileMode) error
	// PebbleOptions sets the FS a Pebble store on this path uses in o, with what
	// that FS needs of Pebble's options (pebblevfs.Configure on the direct path).
	PebbleOptions(o *pebble.Options)
	Close() error
}

// OS is package os: the kernel and fuse paths.
var OS FS = osFS{}

// Dial connects to the service on socket: the direct path. Close closes the
// connection.
func Dial(socket string) (FS, error) {
	c, err := fslib.Dial(fslib.DialOptions{Socket: socket})
	if err != nil {
		return nil, err
	}
	return clientFS{c}, nil
}

type osFS struct{}

func (osFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }
func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil *os.File in the interface
	}
	return f, nil
}
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) RemoveAll(name string) error                  { return os.RemoveAll(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) WriteFile(name string, data []byte, perm fs.FileMode) error {
	return os.WriteFile(name, data, perm)
}
func (osFS) PebbleOptions(o *pebble.Options) { o.FS = vfs.Default }
func (osFS) Close() error                    { return nil }

type clientFS struct{ *fslib.Client }

func (c clientFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := c.Client.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}
func (c clientFS) PebbleOptions(o *pebble.Options) { pebblevfs.Configure(o, c.Client) }
