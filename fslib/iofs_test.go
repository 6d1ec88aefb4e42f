package fslib_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/polytropon/polytropon/fslib"
)

func TestIOFS(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		files := map[string]string{
			"hello.txt":         "hello, world\n",
			"empty":             "",
			"dir/a":             "a",
			"dir/b":             strings.Repeat("b", 10000),
			"dir/sub/deep/file": "deep",
		}
		for name, data := range files {
			if i := strings.LastIndexByte(name, '/'); i > 0 {
				must(t, c.MkdirAll(name[:i], 0o755))
			}
			must(t, c.WriteFile(name, []byte(data), 0o644))
		}
		must(t, c.Mkdir("emptydir", 0o755))
		must(t, c.Symlink("dir/a", "link"))
		must(t, c.Symlink("sub", "dir/sublink"))

		fsys := c.FS()
		if err := fstest.TestFS(fsys, "hello.txt", "empty", "dir/a", "dir/b", "dir/sub/deep/file",
			"emptydir", "link", "dir/sublink"); err != nil {
			t.Fatal(err)
		}
		// fs.Sub goes through the same checks.
		sub, err := fs.Sub(fsys, "dir")
		must(t, err)
		if err := fstest.TestFS(sub, "a", "b", "sub/deep/file"); err != nil {
			t.Fatal(err)
		}

		for _, bad := range []string{"/hello.txt", "../x", "dir/../a", "./hello.txt", "dir/", "", "a//b"} {
			for op, call := range map[string]func() error{
				"open":     func() error { _, err := fsys.Open(bad); return err },
				"stat":     func() error { _, err := fs.Stat(fsys, bad); return err },
				"readdir":  func() error { _, err := fs.ReadDir(fsys, bad); return err },
				"readfile": func() error { _, err := fs.ReadFile(fsys, bad); return err },
				"readlink": func() error { _, err := fs.ReadLink(fsys, bad); return err },
				"lstat":    func() error { _, err := fs.Lstat(fsys, bad); return err },
			} {
				err := call()
				var pe *fs.PathError
				if !errors.As(err, &pe) || pe.Err != fs.ErrInvalid || pe.Path != bad || pe.Op != op {
					t.Fatalf("%s(%q) = %v, want PathError{%s, %q, fs.ErrInvalid}", op, bad, err, op, bad)
				}
			}
		}
		if _, err := fs.Stat(fsys, "missing"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("missing: %v", err)
		}
	})
}
