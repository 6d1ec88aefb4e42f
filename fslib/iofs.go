package fslib

import (
	"io/fs"
	"os"
)

// ioFS is the io/fs view of a Client: read-only, names as fs.ValidPath requires
// them (unrooted, slash-separated, no "." or ".." elements; "." is the root).
type ioFS struct{ c *Client }

// FS returns the Client as an io/fs file system (fs.FS, fs.StatFS, fs.ReadDirFS,
// fs.ReadFileFS and fs.ReadLinkFS). Invalid names are fs.ErrInvalid in a
// PathError; the files it opens are *File, so they are also fs.ReadDirFile,
// io.Seeker and io.ReaderAt.
func (c *Client) FS() fs.FS { return ioFS{c} }

var (
	_ fs.StatFS     = ioFS{}
	_ fs.ReadDirFS  = ioFS{}
	_ fs.ReadFileFS = ioFS{}
	_ fs.ReadLinkFS = ioFS{}
)

func invalid(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
}

func (f ioFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("open", name)
	}
	file, err := f.c.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return file, nil
}

func (f ioFS) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("stat", name)
	}
	return f.c.Stat(name)
}

func (f ioFS) Lstat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("lstat", name)
	}
	return f.c.Lstat(name)
}

func (f ioFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("readdir", name)
	}
	return f.c.ReadDir(name)
}

func (f ioFS) ReadFile(name string) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("readfile", name)
	}
	return f.c.ReadFile(name)
}

func (f ioFS) ReadLink(name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", invalid("readlink", name)
	}
	return f.c.Readlink(name)
}
